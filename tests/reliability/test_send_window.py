"""The send window, through real workers: what a crash, a slow provider and a lost answer may repeat.

- a worker killed mid-batch repeats at most the one provider request it was in the middle of, and
  the delivery records say which (`in_flight_provider`); its retry stays with that provider;
- a sender slower than its lease renews it, so the sweeper never hands its rows to another worker;
- a provider that records a message and then hangs past the client's timeout leaves the delivery
  `unknown` (not failed over), until the provider's own callback settles it;
- one recipient whose rendering raises (a MemoryError) fails alone; its batch-mates are sent.

Emails carry per-recipient content that is not a plain lookup (a filter), so it cannot be sent as
substitutions and SendGrid takes one request per message (the worst case of issue 13: a batch of
requests, each of which may be the one in flight).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from apps.notifications.models import Delivery, DeliveryAttempt, Notification
from apps.notifications.services.dispatch import dispatch_due, sweep
from apps.notifications.services.notifications import notification_create
from sandbox import config as sandbox_config
from sandbox.keys import event_webhook_public_key
from sandbox.testing import SandboxClient
from tests.conftest import wait_for
from tests.reliability.conftest import (
    assert_delivered_once,
    far_future,
    in_flight,
    people,
    ready,
    sandbox_counts,
    send,
    settle,
)

pytestmark = [pytest.mark.worker, pytest.mark.slow]

BULK = "notifications.bulk"
PERSONAL = {
    "email": {"subject": "Order {{ order }} shipped", "text": "Hello {{ recipient.name | upper }}, it is on its way."}
}
# Loaded by the worker's interpreter at start (PYTHONPATH): in each prefork child, rendering for a
# recipient whose data says so runs out of memory, as a runaway template would.
EXPLODING_RENDER = """
from celery.signals import worker_process_init


@worker_process_init.connect(weak=False)
def _render_runs_out_of_memory_for_one_recipient(**_):
    from apps.notifications.services.content import NotificationRenderer

    render = NotificationRenderer.render

    def render_or_explode(self, channel, recipient):
        if (recipient.data or {}).get("explode"):
            raise MemoryError("rendering ran out of memory")
        return render(self, channel, recipient)

    NotificationRenderer.render = render_or_explode
"""


def send_personal(tenant: Any, n: int) -> Notification:
    """An email to `n` people, each with content of their own (one SendGrid request each)."""
    audience = [{**person, "name": f"Person {i}"} for i, person in enumerate(people(n))]
    return notification_create(
        tenant=tenant,
        content=PERSONAL,
        category="orders",
        payload={"order": "A-7"},
        recipients=audience,
        channels=["email"],
        priority="bulk",
    )


def test_a_worker_killed_mid_batch_repeats_at_most_the_request_in_flight_and_says_which(
    sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any, own_queue: Any
):
    # Given one worker process sending 12 emails, one slow SendGrid request each
    own_queue(BULK)
    worker = ready(start_worker(queues=BULK, concurrency=1))
    sandbox_client.add_fault("sendgrid", delay_ms=300)
    notification = send_personal(sandboxed, 12)

    # When its process is killed in the middle of the batch
    wait_for(lambda: len(sandbox_client.messages("sendgrid")) >= 3, timeout=30, message="sends under way")
    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)

    # Then whatever reached SendGrid unrecorded is marked in flight to it: one request at most
    unrecorded = {str(d.pk): d for d in Delivery.objects.filter(notification=notification, status="sending")}
    assert unrecorded, "the kill left part of the batch unsent"
    marked = {pk for pk, d in unrecorded.items() if d.in_flight_provider}
    assert len(marked) <= 1, marked
    assert {unrecorded[pk].in_flight_provider for pk in marked} <= {"sendgrid"}
    reached_unrecorded = {key for key in sandbox_counts(sandbox_client) if key in unrecorded}
    assert reached_unrecorded <= marked

    # ... the sweeper makes the marked one `unknown` (SendGrid's events can settle it), not a blind retry
    sandbox_client.clear_faults()
    assert sweep(now=far_future()).leases == len(unrecorded)
    for pk in marked:
        assert Delivery.objects.get(pk=pk).status == "unknown"
        assert DeliveryAttempt.objects.filter(delivery_id=pk, outcome="lost", provider="sendgrid").exists()

    # ... and once retried, everything is sent, at most the marked one twice, and no delivery
    # reached two providers (the marked one's retry stayed with SendGrid)
    settle([notification.pk], timeout=60)
    assert assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=1) == {"sent": 12}
    assert {key for key, n in sandbox_counts(sandbox_client).items() if n > 1} <= marked
    by_provider = sandbox_client.counts()["providers"]
    at_sendgrid = set(by_provider["sendgrid"]["idempotency_keys"])
    at_smtp = set(by_provider.get("smtp", {}).get("idempotency_keys", {}))
    assert marked <= at_sendgrid and not at_sendgrid & at_smtp


def test_a_sender_slower_than_its_lease_keeps_it_and_nothing_is_sent_twice(
    sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any, own_queue: Any
):
    # Given workers whose lease (3 s) is shorter than their batch takes (12 requests of 0.4 s)
    own_queue(BULK)
    ready(start_worker(queues=BULK, concurrency=2, NOTIFICATIONS_SEND_LEASE_SECONDS="3"))
    sandbox_client.add_fault("sendgrid", delay_ms=400)
    notification = send_personal(sandboxed, 12)

    # When the sweeper and the dispatcher run on the real clock all along
    taken_back: list[int] = []

    def beat_until_settled() -> bool:
        taken_back.append(sweep().leases)
        dispatch_due()
        made = Delivery.objects.filter(notification=notification).count() == 12
        return made and in_flight([notification.pk]) == 0

    wait_for(beat_until_settled, timeout=60, interval=0.3, message="the batch to be sent")
    sweep()

    # Then the sender kept its rows, and each email went out once
    assert sum(taken_back) == 0
    assert not DeliveryAttempt.objects.filter(delivery__notification=notification, outcome="lost").exists()
    assert assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=0) == {"sent": 12}


def test_a_provider_that_records_then_hangs_leaves_the_delivery_unknown_until_its_callback_settles_it(
    sandboxed: Any,
    sandbox_client: SandboxClient,
    start_worker: Any,
    own_queue: Any,
    live_server: Any,
    settings: Any,
):
    # Given SendGrid accepting and recording an email, then answering only after the client's
    # timeout (2 s); its Event Webhook reports the message 5 s after accepting it
    settings.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = event_webhook_public_key(sandbox_config.DEFAULT_EVENT_KEY_SEED)
    own_queue(BULK)
    ready(start_worker(queues=BULK, concurrency=1, SIGNALBOX_RECONCILE_WINDOW_SECONDS="120"))
    sandbox_client.auto_callbacks("sendgrid", f"{live_server.url}/callbacks/sendgrid/events", delay_ms=5000)
    sandbox_client.add_fault("sendgrid", timeout=8, times=1)
    notification = send(sandboxed, people(1), ["email"])

    # When the answer is lost, the delivery waits as `unknown`: no failover to SMTP
    def status() -> str:
        return str(Delivery.objects.filter(notification=notification).values_list("status", flat=True).first())

    wait_for(lambda: status() == "unknown", timeout=30, message="the delivery to wait for SendGrid's report")
    delivery = Delivery.objects.get(notification=notification)
    assert (delivery.in_flight_provider, delivery.error_code) == ("sendgrid", "timeout")

    # Then SendGrid's events settle it, and it was sent once, through SendGrid only
    wait_for(lambda: status() == "delivered", timeout=30, message="the Event Webhook to settle it")
    assert sandbox_client.count("sendgrid", str(delivery.pk)) == 1
    assert sandbox_client.messages("smtp") == []
    attempts = DeliveryAttempt.objects.filter(delivery=delivery)
    assert [(a.provider, a.outcome, a.error_code) for a in attempts] == [("sendgrid", "transient", "timeout")]


def test_one_recipient_whose_rendering_runs_out_of_memory_fails_alone(
    sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any, own_queue: Any, tmp_path: Any
):
    # Given a worker in which rendering for one recipient raises MemoryError
    (tmp_path / "sitecustomize.py").write_text(EXPLODING_RENDER)
    python_path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    own_queue(BULK)
    worker = ready(start_worker(queues=BULK, concurrency=1, PYTHONPATH=python_path))
    audience = people(4)
    audience[2]["data"] = {"explode": True}

    # When the four are sent in one batch
    notification = send(sandboxed, audience, ["email"])
    deliveries = Delivery.objects.filter(notification=notification)
    wait_for(
        lambda: deliveries.count() == 4 and not deliveries.filter(status__in=Delivery.IN_FLIGHT).exists(),
        timeout=30,
        message="the batch to be recorded, without any sweep",
    )

    # Then only that one failed, with the reason; the others were sent on their first attempt
    got = {d.recipient.external_id: d for d in deliveries.select_related("recipient")}
    poisoned = got.pop("p-2")
    assert (poisoned.status, poisoned.error_code) == ("failed", "render_error")
    assert "MemoryError" in poisoned.last_error
    assert {(d.status, d.attempts) for d in got.values()} == {("sent", 1)}
    assert set(sandbox_counts(sandbox_client)) == {str(d.pk) for d in got.values()}
    assert worker.proc.poll() is None  # the worker lives on


@pytest.mark.parametrize("earlier_request_to", ["sendgrid", ""], ids=["uncertain", "never-sent"])
def test_a_retry_that_may_repeat_a_request_waits_for_its_provider_instead_of_failing_over(
    sandboxed: Any, sandbox_client: SandboxClient, earlier_request_to: str
):
    from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
    from apps.notifications.services.sending import deliveries_send
    from apps.providers import circuit

    # Given an email whose first request may have reached SendGrid (marked in flight to it), and
    # SendGrid's breaker open, with the SMTP relay next in the chain and healthy
    notification = send(sandboxed, people(1), ["email"])
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    delivery = Delivery.objects.get(notification=notification, channel="email")
    Delivery.objects.filter(pk=delivery.pk).update(attempts=1, in_flight_provider=earlier_request_to)
    circuit.record(scope=sandboxed.pk, provider="sendgrid", failures=100, successes=0)

    # When the retry runs
    deliveries_send(delivery_ids=[delivery.pk])

    # Then a possibly repeated request waits for SendGrid (a copy via SMTP could not be absorbed);
    # a delivery no request reached fails over as before
    delivery.refresh_from_db()
    if earlier_request_to:
        assert delivery.status == Delivery.Status.PENDING and delivery.next_attempt_at is not None
        assert delivery.in_flight_provider == "sendgrid"
        assert sum(sandbox_counts(sandbox_client).values()) == 0
    else:
        assert delivery.status == Delivery.Status.SENT and delivery.provider == "smtp"
        assert sandbox_counts(sandbox_client)[str(delivery.pk)] == 1
