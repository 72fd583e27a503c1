"""Recording events through the API, and `event_emit` for Signalbox's own happenings."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.events.models import Event, Rule, WebhookEndpoint, WebhookMessage
from apps.events.services import event_emit
from apps.events.services.events import events_purge
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_an_event_is_recorded_and_answered_202(api):
    response = api.post(
        "/api/v1/events/",
        {"type": "order.paid", "subject": {"type": "order", "id": "42"}, "payload": {"amount": 990}},
        format="json",
    )

    assert response.status_code == 202
    body = response.json()
    assert body["type"] == "order.paid" and body["status"] == "pending" and body["source"] == "api"
    assert body["subject"] == {"type": "order", "id": "42"}
    assert body["actor"]["id"] == api.api_key.partition(".")[0]
    assert api.get(f"/api/v1/events/{body['id']}/").json()["payload"] == {"amount": 990}


def test_an_event_keeps_the_actor_the_client_names_and_the_key_that_recorded_it(api):
    prefix = api.api_key.partition(".")[0]
    key = {"type": "api_key", "id": prefix, "name": "test"}

    named = api.post("/api/v1/events/", {"type": "order.paid", "actor": {"type": "user", "id": "u-7"}}, format="json")
    unnamed = api.post("/api/v1/events/", {"type": "order.paid"}, format="json")

    assert named.status_code == 202
    assert named.json()["actor"] == {"type": "user", "id": "u-7", "recorded_by": key}
    assert unnamed.json()["actor"] == {**key, "recorded_by": key}
    assert Event.objects.get(pk=named.json()["id"]).actor["id"] == "u-7"


@pytest.mark.parametrize(
    "actor",
    [
        "u-7",
        {"type": "user"},
        {"type": "user", "id": "u-7", "role": "admin"},
        {"type": "User Account", "id": "u-7"},
        {"type": "user", "id": ""},
        {"type": "user", "id": 7},
        {"type": "user", "id": "x" * 201},
        {"type": "api_key", "id": "sbx_forged1"},
        {"type": "system", "id": "signalbox"},
    ],
)
def test_a_badly_shaped_or_reserved_actor_is_refused(api, actor):
    response = api.post("/api/v1/events/", {"type": "order.paid", "actor": actor}, format="json")

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_actor" and "actor" in response.json()["fields"]
    assert not Event.objects.exists()


def test_rule_conditions_see_the_clients_actor(api, tenant):
    from apps.events.services.processing import event_process
    from apps.events.services.rules import rule_create

    rule = rule_create(
        tenant=tenant,
        name="only u-7, through this key",
        event_type="order.paid",
        condition=f'event.actor.id == "u-7" && event.actor.recorded_by.id == "{api.api_key.partition(".")[0]}"',
        actions=[{"type": "task", "task": "signalbox.testing.count", "params": {"steps": "1"}}],
    )
    outcomes = {}
    for who in ("u-7", "u-8"):
        body = {"type": "order.paid", "actor": {"type": "user", "id": who}}
        event_id = api.post("/api/v1/events/", body, format="json").json()["id"]
        event_process(event_id=event_id)
        outcomes[who] = rule.executions.get(event_id=event_id).outcome

    assert outcomes == {"u-7": "succeeded", "u-8": "skipped"}


@pytest.mark.parametrize(
    ("event_type", "code"),
    [
        ("Order Paid", "invalid_event_type"),
        ("order.*", "invalid_event_type"),
        ("transition.applied", "reserved_event_type"),
        ("task.succeeded", "reserved_event_type"),
        ("endpoint.disabled", "reserved_event_type"),
    ],
)
def test_invalid_and_reserved_types_are_refused(api, event_type, code):
    response = api.post("/api/v1/events/", {"type": event_type}, format="json")

    assert response.status_code == 422
    assert response.json()["code"] == code
    assert not Event.objects.exists()


def test_an_idempotency_key_records_the_event_once(api):
    body = {"type": "order.paid", "subject": {"type": "order", "id": "1"}}

    first = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="evt-1")
    again = api.post("/api/v1/events/", body, format="json", HTTP_IDEMPOTENCY_KEY="evt-1")
    changed = api.post("/api/v1/events/", {**body, "type": "order.lost"}, format="json", HTTP_IDEMPOTENCY_KEY="evt-1")

    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"
    assert Event.objects.count() == 1


def test_recording_needs_events_write_and_listing_filters_by_subject(api, tenant):
    reader = client_for(tenant, ["read"])
    assert reader.post("/api/v1/events/", {"type": "order.paid"}, format="json").status_code == 403
    for subject in ("1", "2"):
        api.post("/api/v1/events/", {"type": "order.paid", "subject": {"type": "order", "id": subject}}, format="json")

    listed = reader.get("/api/v1/events/?subject_type=order&subject_id=2").json()["results"]

    assert [e["subject"]["id"] for e in listed] == ["2"]


def test_another_tenants_events_are_invisible(api, other_api):
    event = api.post("/api/v1/events/", {"type": "order.paid"}, format="json").json()

    assert other_api.get(f"/api/v1/events/{event['id']}/").status_code == 404
    assert other_api.get("/api/v1/events/").json()["results"] == []


def test_event_emit_writes_nothing_until_something_listens(tenant):
    assert event_emit(tenant=tenant, type="delivery.delivered", subject={"type": "delivery", "id": "d1"}) is None
    assert not Event.objects.exists()

    Rule.objects.create(tenant=tenant, name="watch", event_type="delivery.*", actions=[])
    emitted = event_emit(
        tenant=tenant,
        type="delivery.delivered",
        subject=("delivery", "d1"),
        payload={"id": uuid.UUID(int=1), "attempts": 2},
    )

    assert emitted is not None
    assert (emitted.source, emitted.subject_type, emitted.subject_id) == ("signalbox", "delivery", "d1")
    assert emitted.payload == {"id": "00000000-0000-0000-0000-000000000001", "attempts": 2}
    assert emitted.actor == {"type": "system", "id": "signalbox"}


def test_event_emit_takes_a_model_instance_as_subject(tenant):
    Rule.objects.create(tenant=tenant, name="all", event_type="*", actions=[])

    emitted = event_emit(tenant=tenant, type="workflow.instance_created", subject=tenant, payload={})

    assert emitted is not None and (emitted.subject_type, emitted.subject_id) == ("tenant", str(tenant.pk))


def test_events_past_retention_are_purged_unless_still_in_flight(tenant):
    old = timezone.now() - timedelta(days=31)
    done, unprocessed, delivering, recent = (
        Event.objects.create(tenant=tenant, type="order.paid", status=status)
        for status in ("processed", "pending", "processed", "processed")
    )
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="http://127.0.0.1:9/", secret_encrypted="x")
    WebhookMessage.objects.create(
        tenant=tenant, endpoint=endpoint, event=delivering, event_type="order.paid", body="{}"
    )
    Event.objects.filter(pk__in=[done.pk, unprocessed.pk, delivering.pk]).update(created_at=old)
    # Still in flight: its next attempt is scheduled (a pending event with none ahead would go).
    Event.objects.filter(pk=unprocessed.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))

    assert events_purge() == 1

    assert set(Event.objects.values_list("pk", flat=True)) == {unprocessed.pk, delivering.pk, recent.pk}
