"""Dead letters: a poison delivery ends `dead` with its reason after its attempts and never loops;
operators list and inspect them, and replay one or many — through the API or admin — exactly once,
even when two replays race."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from prometheus_client import REGISTRY

from apps.notifications.models import Delivery, DeliveryAttempt, Notification
from apps.notifications.services.dispatch import dispatch_due, sweep
from apps.notifications.services.sending import deliveries_claim
from sandbox.testing import SandboxClient
from tests.conftest import client_for
from tests.reliability.conftest import assert_delivered_once, far_future, people, send
from tests.reliability.test_provider_outcomes import drain, run

POISON = "+14155550666"


def dead_letters(channel: str = "sms") -> float:
    return REGISTRY.get_sample_value("signalbox_dead_letters_total", {"kind": "delivery", "channel": channel}) or 0.0


@pytest.fixture
def poisoned(sandboxed: Any, sandbox_client: SandboxClient) -> Notification:
    """Three SMS, one to a number Twilio always answers 503 for: it ends dead after 4 attempts."""
    sandbox_client.add_fault("twilio", 503, match=POISON)
    notification = send(sandboxed, [*people(2), {"external_id": "poison", "phone": POISON}], ["sms"])
    run(notification)
    return notification


@pytest.mark.django_db
def test_a_delivery_that_always_fails_ends_dead_with_its_reason_and_never_loops(
    poisoned: Notification, sandbox_client: SandboxClient
):
    before = dead_letters()
    dead = Delivery.objects.get(notification=poisoned, recipient__external_id="poison")
    assert (dead.status, dead.attempts, dead.error_code) == ("dead", 4, "20503")
    assert dead.failed_at is not None and dead.next_attempt_at is None and "503" in dead.last_error
    assert [a.outcome for a in DeliveryAttempt.objects.filter(delivery=dead).order_by("number")] == ["transient"] * 4

    # The dispatcher and the sweeper never pick it up again
    for _ in range(3):
        dispatch_due(now=far_future())
        sweep(now=far_future())
    assert len([r for r in sandbox_client.requests("twilio") if POISON in r["recipients"]]) == 4
    assert Delivery.objects.get(pk=dead.pk).status == "dead"
    assert dead_letters() == before  # counted once, when it died (before `before` was read)
    assert_delivered_once(sandbox_client, [poisoned.pk])


@pytest.mark.django_db
def test_a_message_that_kills_its_worker_every_time_ends_dead_after_its_attempts(
    sandboxed: Any, sandbox_client: SandboxClient
):
    notification = send(sandboxed, people(1), ["sms"])
    from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out

    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    delivery = Delivery.objects.get(notification=notification)
    before = dead_letters()

    # Each time: a worker claims it and dies before recording anything; the lease runs out
    for _ in range(6):
        if Delivery.objects.get(pk=delivery.pk).status != "queued":
            dispatch_due(now=far_future())
        deliveries_claim(delivery_ids=[delivery.pk])
        sweep(now=far_future())

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.error_code) == ("dead", 4, "lease_expired")
    assert [a.outcome for a in DeliveryAttempt.objects.filter(delivery=delivery)] == ["lost"] * 4
    assert dead_letters() == before + 1


@pytest.mark.django_db
def test_dead_deliveries_are_listed_inspected_and_replayed_once(
    poisoned: Notification, api: Any, other_api: Any, sandbox_client: SandboxClient
):
    listed = api.get("/api/v1/deliveries/", {"status": "dead"}).json()
    (item,) = listed["results"]
    assert (item["recipient"], item["status"], item["error_code"]) == ("poison", "dead", "20503")
    assert api.get("/api/v1/deliveries/", {"status": "dead", "error_code": "20503"}).json()["count"] == 1
    detail = api.get(f"/api/v1/deliveries/{item['id']}/").json()
    assert [(a["number"], a["provider"], a["outcome"]) for a in detail["attempts_log"]] == [
        (n, "twilio", "transient") for n in (1, 2, 3, 4)
    ]
    assert other_api.post(f"/api/v1/deliveries/{item['id']}/replay/").status_code == 404

    # The number works again; the delivery is replayed, once
    sandbox_client.clear_faults()
    replayed = api.post(f"/api/v1/deliveries/{item['id']}/replay/")
    again = api.post(f"/api/v1/deliveries/{item['id']}/replay/")
    assert replayed.status_code == 202 and replayed.json()["status"] == "pending"
    assert replayed.json()["attempts"] == 0 and len(replayed.json()["attempts_log"]) == 4  # the history stays
    assert (again.status_code, again.json()["code"]) == (409, "not_replayable")
    drain([poisoned])
    assert Delivery.objects.get(pk=item["id"]).status == "sent"
    assert sandbox_client.count("twilio", item["id"]) == 1
    assert_delivered_once(sandbox_client, [poisoned.pk])


@pytest.mark.django_db
def test_bulk_replay_takes_ids_or_a_filter(sandboxed: Any, api: Any, sandbox_client: SandboxClient):
    sandbox_client.add_fault("twilio", 21408)  # not enabled for the region: permanent, failed (not listed)
    first = send(sandboxed, people(3, "a"), ["sms"])
    second = send(sandboxed, people(2, "b", first=10), ["sms"])
    run(first)
    run(second)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"failed"}
    sandbox_client.clear_faults()
    one = str(Delivery.objects.filter(notification=first).first().pk)  # type: ignore[union-attr]

    assert api.post("/api/v1/deliveries/replay/", {}, format="json").status_code == 422  # neither ids nor filter
    by_id = api.post("/api/v1/deliveries/replay/", {"ids": [one]}, format="json")
    by_filter = api.post(
        "/api/v1/deliveries/replay/",
        {"filter": {"status": ["failed"], "notification": str(second.pk), "error_code": "21408"}},
        format="json",
    )
    nothing_left = api.post("/api/v1/deliveries/replay/", {"ids": [one]}, format="json")

    assert (by_id.status_code, by_id.json()) == (202, {"matched": 1, "replayed": 1})
    assert by_filter.json() == {"matched": 2, "replayed": 2}
    assert nothing_left.json() == {"matched": 0, "replayed": 0}
    drain([first, second])
    assert sorted(Delivery.objects.values_list("status", flat=True)) == ["failed", "failed", "sent", "sent", "sent"]


@pytest.mark.django_db(transaction=True)
def test_two_replays_racing_on_one_delivery_send_it_once(
    poisoned_committed: Notification, sandbox_client: SandboxClient, tenant: Any
):
    dead = Delivery.objects.get(notification=poisoned_committed, status="dead")
    sandbox_client.clear_faults()
    clients = [client_for(tenant), client_for(tenant)]
    answers: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def replay(slot: int) -> None:
        barrier.wait()
        if slot == 0:
            answers[slot] = clients[slot].post(f"/api/v1/deliveries/{dead.pk}/replay/")
        else:
            answers[slot] = clients[slot].post("/api/v1/deliveries/replay/", {"ids": [str(dead.pk)]}, format="json")
        connection.close()

    threads = [threading.Thread(target=replay, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    single, bulk = answers
    outcomes = sorted([single.status_code == 202, bulk.json().get("replayed") == 1])
    assert outcomes == [False, True], (single.json(), bulk.json())  # exactly one of them took it
    drain([poisoned_committed])
    assert sandbox_client.count("twilio", str(dead.pk)) == 1
    assert_delivered_once(sandbox_client, [poisoned_committed.pk])


@pytest.fixture
def poisoned_committed(transactional_db: Any, monkeypatch: pytest.MonkeyPatch, request: Any) -> Notification:
    """`poisoned`, committed for real (this process runs the pipeline: publishing is off)."""
    from apps.notifications import tasks

    for task in (tasks.fan_out, tasks.fan_out_chunk, tasks.send_batch):
        monkeypatch.setattr(task, "apply_async", lambda *args, **kwargs: None)
    return request.getfixturevalue("poisoned")  # type: ignore[no-any-return]


@pytest.mark.django_db
def test_operators_replay_dead_letters_from_admin(poisoned: Notification, sandbox_client: SandboxClient, client: Any):
    admin = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(admin)
    dead = Delivery.objects.get(notification=poisoned, status="dead")
    sent = Delivery.objects.filter(notification=poisoned, status="sent").first()
    assert sent is not None

    listing = client.get("/admin/notifications/delivery/", {"status__exact": "dead", "_facets": "1"})
    assert listing.status_code == 200 and str(dead.pk) in listing.content.decode()
    answer = client.post(
        "/admin/notifications/delivery/",
        {"action": "replay", "_selected_action": [str(dead.pk), str(sent.pk)]},
        follow=True,
    )

    assert "Replayed 1 deliveries; 1 were not failed or dead." in answer.content.decode()
    assert Delivery.objects.get(pk=dead.pk).status == "pending"
    sandbox_client.clear_faults()
    drain([poisoned])
    assert sandbox_client.count("twilio", str(dead.pk)) == 1
