"""Outbound webhooks through the real worker, received by a local server and verified with `standardwebhooks`."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apps.core import crypto
from apps.events.models import Event, WebhookEndpoint, WebhookMessage
from apps.events.services.webhooks import message_claim
from apps.events.tasks import deliver_message, dispatch_due, process_event, sweep_events
from apps.observability.models import AuditEntry
from tests.conftest import wait_for
from tests.events.conftest import notification_settled, record_event, register_endpoint

pytestmark = pytest.mark.worker


def message_of(endpoint: dict[str, Any], status: str | None = None, timeout: float = 20) -> WebhookMessage:
    def find() -> WebhookMessage | None:
        found = WebhookMessage.objects.filter(endpoint_id=endpoint["id"])
        if status:
            found = found.filter(status=status)
        return found.first()

    return wait_for(find, timeout=timeout, message=f"a {status or ''} message for {endpoint['url']}")


def test_an_event_reaches_the_endpoint_signed_per_standard_webhooks(worker, api, receiver):
    endpoint = register_endpoint(api, receiver.url(), event_types=["order.*"])

    event = record_event(api, "order.paid", "42", amount=990)

    message = message_of(endpoint, "delivered")
    [received] = receiver.requests
    payload = Webhook(endpoint["secret"]).verify(received.body, received.headers)
    assert payload == {
        "id": event["id"],
        "type": "order.paid",
        "timestamp": payload["timestamp"],
        "subject": {"type": "order", "id": "42"},
        "data": {"amount": 990},
    }
    assert received.headers["webhook-id"] == message.webhook_id == f"msg_{message.pk.hex}"
    assert received.headers["content-type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 44).verify(received.body, received.headers)
    detail = api.get(f"/api/v1/webhook-messages/{message.pk}/").json()
    assert detail["attempts"][0]["outcome"] == "success" and detail["attempts"][0]["status_code"] == 200
    assert detail["payload"]["data"] == {"amount": 990}


def test_only_endpoints_subscribed_to_the_type_receive_it(worker, api, receiver):
    orders = register_endpoint(api, receiver.url("/orders"), event_types=["order.*"])
    invoices = register_endpoint(api, receiver.url("/invoices"), event_types=["invoice.paid"])
    everything = register_endpoint(api, receiver.url("/all"))

    record_event(api, "order.shipped")

    message_of(orders, "delivered")
    message_of(everything, "delivered")
    assert not WebhookMessage.objects.filter(endpoint_id=invoices["id"]).exists()
    assert sorted(r.path for r in receiver.requests) == ["/all", "/orders"]


def test_failures_are_retried_with_the_same_webhook_id_until_accepted(worker, api, receiver, fast_retries):
    receiver.answer(500, 503)
    endpoint = register_endpoint(api, receiver.url())

    record_event(api, "order.paid")

    message = message_of(endpoint, "delivered")
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {message.webhook_id}
    for request in receiver.requests:  # each retry is freshly signed, so it still verifies
        Webhook(endpoint["secret"]).verify(request.body, request.headers)
    attempts = api.get(f"/api/v1/webhook-messages/{message.pk}/").json()["attempts"]
    assert [(a["number"], a["outcome"], a["status_code"]) for a in attempts] == [
        (1, "failed", 500),
        (2, "failed", 503),
        (3, "success", 200),
    ]
    assert WebhookEndpoint.objects.get(pk=endpoint["id"]).failing_since is None


def test_out_of_attempts_a_message_is_dead_listed_and_replayable(worker, api, receiver, fast_retries):
    receiver.default = 500
    endpoint = register_endpoint(api, receiver.url())
    record_event(api, "order.paid")

    dead = message_of(endpoint, "failed")
    listed = api.get("/api/v1/webhook-messages/?status=failed").json()["results"]
    assert [m["id"] for m in listed] == [str(dead.pk)]
    assert listed[0]["attempt_count"] == 3 and listed[0]["last_status_code"] == 500

    receiver.default = 200
    replay = api.post(f"/api/v1/webhook-messages/{dead.pk}/replay/")

    assert replay.status_code == 202
    message_of(endpoint, "delivered")
    assert len(receiver.requests) == 4
    assert receiver.requests[-1].headers["webhook-id"] == dead.webhook_id
    again = api.post(f"/api/v1/webhook-messages/{dead.pk}/replay/")  # a delivered message may be resent
    assert again.status_code == 202


def test_bulk_replay_sends_every_dead_message_of_an_endpoint_again(worker, api, receiver, fast_retries):
    receiver.default = 500
    endpoint = register_endpoint(api, receiver.url())
    for subject in ("1", "2"):
        record_event(api, "order.paid", subject)
    wait_for(lambda: WebhookMessage.objects.filter(endpoint_id=endpoint["id"], status="failed").count() == 2)
    receiver.default = 200

    response = api.post("/api/v1/webhook-messages/replay/", {"endpoint_id": endpoint["id"]}, format="json")

    assert response.status_code == 202 and response.json()["replayed"] == 2
    wait_for(lambda: WebhookMessage.objects.filter(endpoint_id=endpoint["id"], status="delivered").count() == 2)


def test_410_gone_disables_the_endpoint_and_emits_endpoint_disabled(worker, api, receiver, fast_retries):
    receiver.answer(410)
    gone = register_endpoint(api, receiver.url("/gone"), event_types=["order.paid"])
    watcher = register_endpoint(api, receiver.url("/ops"), event_types=["endpoint.disabled"])

    record_event(api, "order.paid")

    message_of(gone, "failed")
    endpoint = WebhookEndpoint.objects.get(pk=gone["id"])
    assert not endpoint.enabled and endpoint.disabled_reason == "The endpoint answered 410 Gone."
    notice = message_of(watcher, "delivered")
    body = json.loads(notice.body)
    assert body["type"] == "endpoint.disabled"
    assert body["data"] == {"endpoint_id": gone["id"], "url": gone["url"], "reason": "The endpoint answered 410 Gone."}
    assert AuditEntry.objects.filter(action="webhook_endpoint.disabled", target_id=gone["id"]).exists()
    assert [r.path for r in receiver.requests].count("/gone") == 1

    record_event(api, "order.paid", "43")  # a disabled endpoint gets nothing more
    wait_for(lambda: Event.objects.filter(subject_id="43", status="processed").exists())
    assert WebhookMessage.objects.filter(endpoint_id=gone["id"]).count() == 1

    enabled = api.patch(f"/api/v1/webhook-endpoints/{gone['id']}/", {"enabled": True}, format="json").json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] == ""


def test_an_endpoint_failing_for_days_is_disabled(worker, api, receiver, fast_retries):
    receiver.default = 500
    endpoint = register_endpoint(api, receiver.url())
    WebhookEndpoint.objects.filter(pk=endpoint["id"]).update(failing_since=timezone.now() - timedelta(days=6))

    record_event(api, "order.paid")

    message = message_of(endpoint, "failed")
    assert (message.attempt_count, message.last_error) == (1, "The endpoint was disabled.")
    disabled = WebhookEndpoint.objects.get(pk=endpoint["id"])
    assert not disabled.enabled and disabled.disabled_reason == "Every attempt failed for 5 days."


def test_a_long_wait_is_kept_in_postgresql_and_picked_up_by_the_dispatcher(worker, api, receiver, tenant):
    tenant.settings = {"webhooks": {"retry_schedule": [0, 3600]}}
    tenant.save()
    receiver.answer(500)
    endpoint = register_endpoint(api, receiver.url())
    record_event(api, "order.paid")
    waiting = wait_for(
        lambda: WebhookMessage.objects.filter(endpoint_id=endpoint["id"], attempt_count=1, status="pending").first()
    )
    assert waiting.next_attempt_at > timezone.now() + timedelta(minutes=59)

    WebhookMessage.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    dispatch_due.apply_async()

    message_of(endpoint, "delivered")
    assert len(receiver.requests) == 2


def test_a_send_claimed_by_a_dead_worker_is_reclaimed_by_the_dispatcher(worker, api, receiver):
    endpoint = register_endpoint(api, receiver.url())
    event = Event.objects.create(
        tenant_id=WebhookEndpoint.objects.get(pk=endpoint["id"]).tenant_id, type="order.paid", status="processed"
    )
    stale = timezone.now() - timedelta(minutes=10)
    message = WebhookMessage.objects.create(
        tenant_id=event.tenant_id,
        endpoint_id=endpoint["id"],
        event=event,
        event_type=event.type,
        body="{}",
        status="sending",
        claimed_at=stale,
        attempt_count=1,
        next_attempt_at=stale,
    )

    dispatch_due.apply_async()

    message_of(endpoint, "delivered")
    assert WebhookMessage.objects.get(pk=message.pk).attempt_count == 2


def test_duplicate_deliver_tasks_send_once(worker, api, receiver):
    receiver.delay = 0.5
    endpoint = register_endpoint(api, receiver.url())
    event = Event.objects.create(
        tenant_id=WebhookEndpoint.objects.get(pk=endpoint["id"]).tenant_id, type="x.y", status="processed"
    )
    message = WebhookMessage.objects.create(
        tenant_id=event.tenant_id,
        endpoint_id=endpoint["id"],
        event=event,
        event_type=event.type,
        body="{}",
        next_attempt_at=timezone.now(),
    )

    for _ in range(4):
        deliver_message.apply_async(args=(str(message.pk),))

    message_of(endpoint, "delivered")
    assert len(receiver.requests) == 1
    assert message_claim(message_id=message.pk) is False


def test_redirects_are_not_followed(worker, api, receiver, fast_retries):
    receiver.answer(302)
    endpoint = register_endpoint(api, receiver.url())

    record_event(api, "order.paid")

    message = message_of(endpoint, "delivered")
    first = message.attempts.order_by("number")[0]
    assert (first.outcome, first.status_code) == ("failed", 302)
    assert first.error == "HTTP 302 (redirects are not followed)."
    assert [r.path for r in receiver.requests] == ["/hook", "/hook"]


def test_an_endpoint_that_does_not_answer_in_time_is_a_timeout(worker, api, receiver, tenant):
    tenant.settings = {"webhooks": {"retry_schedule": [0], "timeout_seconds": 0.5}}
    tenant.save()
    receiver.delay = 2
    endpoint = register_endpoint(api, receiver.url())

    record_event(api, "order.paid")

    message = message_of(endpoint, "failed")
    attempt = message.attempts.get()
    assert attempt.outcome == "timeout" and attempt.error == "No answer within 0.5 s."


def test_a_rotated_secret_signs_alongside_the_new_one_during_the_overlap(worker, api, receiver):
    endpoint = register_endpoint(api, receiver.url())
    old = endpoint["secret"]
    rotated = api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret/", {"overlap_seconds": 3600}).json()
    new = rotated["secret"]
    assert new != old and new.startswith("whsec_")

    record_event(api, "order.paid", "1")
    message_of(endpoint, "delivered")
    [during] = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(during.body, during.headers)
    Webhook(new).verify(during.body, during.headers)

    api.post(f"/api/v1/webhook-endpoints/{endpoint['id']}/rotate-secret/", {"overlap_seconds": 0})
    newest = WebhookEndpoint.objects.get(pk=endpoint["id"])
    record_event(api, "order.paid", "2")
    wait_for(lambda: WebhookMessage.objects.filter(endpoint_id=endpoint["id"], status="delivered").count() == 2)
    after = receiver.requests[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(crypto.decrypt(newest.secret_encrypted)).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(after.body, after.headers)


def test_the_secret_is_shown_once_and_stored_encrypted(db, api):
    created = api.post(
        "/api/v1/webhook-endpoints/", {"url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]}, format="json"
    ).json()

    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert "secret" not in api.get(f"/api/v1/webhook-endpoints/{created['id']}/").json()
    assert all("secret" not in e for e in api.get("/api/v1/webhook-endpoints/").json()["results"])
    stored = WebhookEndpoint.objects.get(pk=created["id"]).secret_encrypted
    assert secret not in stored and secret[6:] not in stored
    assert crypto.decrypt(stored) == secret
    assert AuditEntry.objects.filter(action="webhook_endpoint.created", target_id=created["id"]).exists()


def test_a_custom_secret_must_be_24_to_64_bytes_of_base64(db, api):
    short = api.post("/api/v1/webhook-endpoints/", {"url": "http://127.0.0.1:9/", "secret": "whsec_c2hvcnQ="})
    good = api.post(
        "/api/v1/webhook-endpoints/", {"url": "http://127.0.0.1:9/", "secret": "whsec_" + "QUJD" * 10}, format="json"
    )

    assert (short.status_code, short.json()["code"]) == (422, "invalid_secret")
    assert good.status_code == 201 and good.json()["secret"] == "whsec_" + "QUJD" * 10


def test_endpoints_and_messages_of_another_tenant_are_invisible(worker, api, other_api, receiver):
    endpoint = register_endpoint(api, receiver.url())
    record_event(api, "order.paid")
    message = message_of(endpoint, "delivered")

    assert other_api.get(f"/api/v1/webhook-endpoints/{endpoint['id']}/").status_code == 404
    assert other_api.patch(f"/api/v1/webhook-endpoints/{endpoint['id']}/", {"enabled": False}).status_code == 404
    assert other_api.get(f"/api/v1/webhook-messages/{message.pk}/").status_code == 404
    assert other_api.post(f"/api/v1/webhook-messages/{message.pk}/replay/").status_code == 404
    assert other_api.get("/api/v1/webhook-messages/").json()["results"] == []
    bulk = other_api.post("/api/v1/webhook-messages/replay/", {"ids": [str(message.pk)]}, format="json")
    assert bulk.json()["replayed"] == 0
    record_event(other_api, "order.paid")  # the other tenant's events never reach this endpoint
    wait_for(lambda: Event.objects.filter(status="processed").count() == 2)
    assert WebhookMessage.objects.filter(endpoint_id=endpoint["id"]).count() == 1


def test_task_names_are_pinned():
    assert process_event.name == "signalbox.events.process"
    assert sweep_events.name == "signalbox.events.sweep"
    assert deliver_message.name == "signalbox.webhooks.deliver"
    assert dispatch_due.name == "signalbox.webhooks.dispatch_due"


def test_a_notifications_outcomes_reach_a_subscribed_endpoint_as_signed_platform_events(worker, api, tenant, receiver):
    from apps.notifications.services.recipients import recipient_create
    from apps.notifications.services.templates import template_create

    template_create(
        tenant=tenant,
        key="welcome",
        definition={
            "default_channels": ["in_app", "email"],
            "content": {"default": {"in_app": {"title": "Hi"}, "email": {"subject": "Hi", "text": "Welcome."}}},
        },
    )
    recipient_create(tenant=tenant, data={"external_id": "ada", "email": "ada@example.com"})
    endpoint = register_endpoint(api, receiver.url(), event_types=["delivery.*", "notification.sent"])

    response = api.post("/api/v1/notifications/", {"template": "welcome", "recipients": ["ada"]}, format="json")
    assert response.status_code == 202, response.json()
    notification_settled(response.json()["id"])

    wait_for(lambda: WebhookMessage.objects.filter(endpoint_id=endpoint["id"], status="delivered").count() == 3)
    received = [Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in receiver.requests]
    by_type = {(p["type"], p["data"].get("channel")): p for p in received}
    assert set(by_type) == {("delivery.delivered", "in_app"), ("delivery.sent", "email"), ("notification.sent", None)}
    sent = by_type[("delivery.sent", "email")]
    assert sent["subject"] == {"type": "delivery", "id": sent["data"]["delivery_id"]}
    assert (sent["data"]["recipient"], sent["data"]["template"]) == ("ada", "welcome")
    summary = by_type[("notification.sent", None)]["data"]
    assert summary["notification_id"] == response.json()["id"]
    assert summary["deliveries"] == {"delivered": 1, "sent": 1}


# --- dead letters counted, replays audited (in this process: no worker) ------------------------------


def dead_webhooks() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("signalbox_dead_letters_total", {"kind": "webhook", "channel": "webhook"}) or 0.0


def stored_message(tenant: Any, endpoint: WebhookEndpoint, status: str = "pending", **fields: Any) -> WebhookMessage:
    event = Event.objects.create(tenant=tenant, type="order.paid")
    return WebhookMessage.objects.create(
        tenant=tenant, endpoint=endpoint, event=event, event_type=event.type, body="{}", status=status, **fields
    )


def test_disabling_an_endpoint_counts_its_waiting_messages_as_dead_letters(db, tenant):
    from apps.events.services.webhooks import endpoint_disable

    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="http://127.0.0.1:9/", secret_encrypted="x")
    waiting = [stored_message(tenant, endpoint, next_attempt_at=timezone.now()) for _ in range(2)]
    before = dead_webhooks()

    assert endpoint_disable(endpoint_id=endpoint.pk, reason="The endpoint answered 410 Gone.")

    assert {m.status for m in WebhookMessage.objects.filter(pk__in=[m.pk for m in waiting])} == {"failed"}
    assert dead_webhooks() == before + 2


def test_a_message_claimed_for_a_disabled_endpoint_is_a_dead_letter(db, tenant):
    from apps.events.services.webhooks import message_deliver

    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url="http://127.0.0.1:9/", secret_encrypted="x", enabled=False
    )
    message = stored_message(tenant, endpoint, next_attempt_at=timezone.now())
    before = dead_webhooks()

    assert message_deliver(message_id=message.pk) is None

    message.refresh_from_db()
    assert (message.status, message.attempt_count, message.last_error) == ("failed", 0, "The endpoint is disabled.")
    assert dead_webhooks() == before + 1


def test_replaying_a_dead_message_is_audited(db, api, tenant):
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="http://127.0.0.1:9/", secret_encrypted="x")
    dead = stored_message(tenant, endpoint, status="failed")

    assert api.post(f"/api/v1/webhook-messages/{dead.pk}/replay/").status_code == 202

    entry = AuditEntry.objects.get(action="webhook_message.replayed", target_id=str(dead.pk))
    assert (entry.tenant_id, entry.actor_type, entry.actor_id) == (tenant.pk, "api_key", api.api_key.partition(".")[0])
    assert entry.data == {"endpoint_id": str(endpoint.pk), "event_type": "order.paid", "was": "failed"}


def test_a_bulk_replay_is_audited_with_what_it_replayed(db, api, tenant):
    endpoint = WebhookEndpoint.objects.create(tenant=tenant, url="http://127.0.0.1:9/", secret_encrypted="x")
    dead = [stored_message(tenant, endpoint, status="failed") for _ in range(2)]
    stored_message(tenant, endpoint, status="delivered")  # not dead: not replayed in bulk

    response = api.post("/api/v1/webhook-messages/replay/", {"endpoint_id": str(endpoint.pk)}, format="json")
    nothing = api.post("/api/v1/webhook-messages/replay/", {"endpoint_id": str(endpoint.pk)}, format="json")

    assert response.json()["replayed"] == 2 and nothing.json()["replayed"] == 0
    [entry] = AuditEntry.objects.filter(action="webhook_message.bulk_replayed")  # nothing replayed: no entry
    assert (entry.tenant_id, entry.actor_type) == (tenant.pk, "api_key")
    assert entry.data["count"] == 2 and sorted(entry.data["ids"]) == sorted(str(m.pk) for m in dead)
    assert entry.data["endpoint_id"] == str(endpoint.pk) and entry.data["since"] is None


# --- the platform's defaults: the Standard Webhooks (Svix) schedule, driven in this process ------------

# Svix's schedule, as Standard Webhooks recommends: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
SPEC_RETRY_SCHEDULE = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]


def test_a_tenant_without_overrides_is_retried_on_the_standard_webhooks_schedule(db, api, tenant, receiver):
    from apps.events.services.webhooks import message_deliver, request_timeout, retry_schedule

    receiver.default = 500
    endpoint = WebhookEndpoint.objects.get(pk=register_endpoint(api, receiver.url())["id"])
    message = stored_message(tenant, endpoint, next_attempt_at=timezone.now())

    assert "webhooks" not in tenant.settings
    assert retry_schedule(tenant) == SPEC_RETRY_SCHEDULE
    assert request_timeout(tenant) == 15.0

    waits = []
    for _ in SPEC_RETRY_SCHEDULE:
        sent_at = timezone.now()
        assert message_deliver(message_id=message.pk) == "failed"
        message.refresh_from_db()
        if message.status == "pending":
            assert message.next_attempt_at is not None
            waits.append(round((message.next_attempt_at - sent_at).total_seconds()))
            WebhookMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())  # the wait is over

    assert waits == SPEC_RETRY_SCHEDULE[1:]
    assert (message.status, message.attempt_count, message.next_attempt_at) == ("failed", 8, None)
    assert len(receiver.requests) == 8
