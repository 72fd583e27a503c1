"""Sending: claim-before-send (two claims, one winner), results recorded in one UPDATE, backoff with
full jitter and a retry_after floor, the dispatcher, the sweeper, and replays. Services are driven
directly here; test_pipeline.py goes through the worker."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.notifications.models import Delivery, DeliveryAttempt, Device, Notification, SinkRecord
from apps.notifications.services.dispatch import dispatch_due, sweep
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.recipients import device_register
from apps.notifications.services.sending import (
    RetryPolicy,
    backoff_seconds,
    deliveries_replay,
    deliveries_send,
    delivery_claim,
)

pytestmark = pytest.mark.django_db


def _queued(recording_tenant, make_template, make_recipients, *, n=3, metadata=None, channels=("email",)):
    make_template(default_channels=list(channels))
    make_recipients(n)
    notification = notification_create(
        tenant=recording_tenant,
        template="order_shipped",
        payload={"order_id": "A-1"},
        recipients=[f"user-{i}" for i in range(n)],
        metadata=metadata or {},
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    ids = [
        str(pk)
        for pk in Delivery.objects.filter(notification=notification, status="queued").values_list("pk", flat=True)
    ]
    return notification, ids


def test_of_two_claims_on_the_same_rows_only_one_wins(recording_tenant, make_template, make_recipients):
    _, ids = _queued(recording_tenant, make_template, make_recipients)
    first = delivery_claim(delivery_ids=ids)
    second = delivery_claim(delivery_ids=ids)
    assert sorted(map(str, first)) == sorted(ids)
    assert second == []
    claimed = Delivery.objects.filter(pk__in=ids)
    assert {d.status for d in claimed} == {"sending"}
    assert all(
        d.attempts == 1 and d.lease_expires_at is not None and d.lease_expires_at > timezone.now() for d in claimed
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_share_a_row(recording_tenant, make_template, make_recipients, monkeypatch):
    # Committed for real here: keep a session worker (if one runs) from claiming these rows too.
    from apps.notifications import tasks

    for task in (tasks.fan_out, tasks.fan_out_chunk, tasks.send_batch):
        monkeypatch.setattr(task, "apply_async", lambda *args, **kwargs: None)
    _, ids = _queued(recording_tenant, make_template, make_recipients, n=200)
    won: list[list] = [[], []]
    barrier = threading.Barrier(2)

    def claim(slot: int) -> None:
        barrier.wait()
        won[slot] = delivery_claim(delivery_ids=ids)
        connection.close()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(won[0]) & set(won[1])
    assert len(won[0]) + len(won[1]) == 200


def test_a_batch_is_sent_once_and_recorded_in_a_few_queries(recording_tenant, make_template, make_recipients):
    notification, ids = _queued(recording_tenant, make_template, make_recipients, n=40)
    with CaptureQueriesContext(connection) as ctx:
        summary = deliveries_send(delivery_ids=ids)
    assert summary.claimed == 40 and summary.statuses == {"sent": 40}
    # Claim, loads, the sink's insert, the staged record, attempts, completion, and the tenant's
    # event listeners (asked once per batch, whatever the number of deliveries).
    assert len(ctx.captured_queries) <= 16, [q["sql"][:80] for q in ctx.captured_queries]
    # Sending the same ids again sends nothing.
    assert deliveries_send(delivery_ids=ids).claimed == 0
    assert SinkRecord.objects.count() == 40
    delivery = Delivery.objects.get(pk=ids[0])
    assert delivery.status == "sent" and delivery.provider == "recording_sink"
    assert delivery.provider_message_id == f"rec-{delivery.pk}"
    rendered = delivery.rendered or {}
    assert rendered["to"] == delivery.recipient.email
    assert rendered["content"]["subject"] == "Order A-1 shipped"
    assert delivery.lease_expires_at is None and delivery.sent_at is not None
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert (attempt.number, attempt.outcome, attempt.provider) == (1, "accepted", "recording_sink")
    notification.refresh_from_db()
    assert notification.status == Notification.Status.COMPLETED


def test_a_transient_failure_is_scheduled_for_retry_then_goes_dead(
    recording_tenant, make_template, make_recipients, settings
):
    settings.SIGNALBOX_NOTIFICATIONS = {**settings.SIGNALBOX_NOTIFICATIONS, "MAX_ATTEMPTS": 2}
    _, ids = _queued(
        recording_tenant, make_template, make_recipients, n=1, metadata={"sink_outcomes": ["transient:120"]}
    )
    before = timezone.now()
    deliveries_send(delivery_ids=ids)
    delivery = Delivery.objects.get(pk=ids[0])
    assert delivery.status == "pending" and delivery.error_code == "scripted"
    retry_at = delivery.next_attempt_at
    assert retry_at is not None and retry_at >= before + timedelta(seconds=120)  # retry_after is a floor

    # The dispatcher leaves it until it is due, then queues it again.
    assert dispatch_due()["deliveries"] == 0
    assert dispatch_due(now=retry_at + timedelta(seconds=1))["deliveries"] == 1
    assert Delivery.objects.get(pk=ids[0]).status == "queued"
    deliveries_send(delivery_ids=ids)
    delivery.refresh_from_db()
    assert delivery.status == "dead" and delivery.attempts == 2 and delivery.failed_at is not None
    assert list(DeliveryAttempt.objects.filter(delivery=delivery).values_list("number", "outcome")) == [
        (1, "transient"),
        (2, "transient"),
    ]


def test_a_permanent_failure_is_not_retried(recording_tenant, make_template, make_recipients):
    _, ids = _queued(recording_tenant, make_template, make_recipients, n=1, metadata={"sink_outcomes": ["permanent"]})
    deliveries_send(delivery_ids=ids)
    delivery = Delivery.objects.get(pk=ids[0])
    assert delivery.status == "failed" and delivery.next_attempt_at is None and delivery.attempts == 1


def test_replay_gives_failed_deliveries_a_fresh_start(recording_tenant, make_template, make_recipients):
    notification, ids = _queued(
        recording_tenant, make_template, make_recipients, n=1, metadata={"sink_outcomes": ["permanent"]}
    )
    deliveries_send(delivery_ids=ids)
    notification.refresh_from_db()
    assert notification.status == "completed"
    assert deliveries_replay(tenant_id=recording_tenant.pk, delivery_ids=ids) == 1
    delivery = Delivery.objects.get(pk=ids[0])
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    notification.refresh_from_db()
    assert notification.status == "dispatched"
    assert deliveries_replay(tenant_id=recording_tenant.pk, delivery_ids=ids) == 0


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after():
    policy = RetryPolicy(max_attempts=10, base_seconds=10, cap_seconds=100)
    assert backoff_seconds(attempt=1, policy=policy, rng=lambda: 1.0) == 10
    assert backoff_seconds(attempt=3, policy=policy, rng=lambda: 1.0) == 40
    assert backoff_seconds(attempt=8, policy=policy, rng=lambda: 1.0) == 100
    assert backoff_seconds(attempt=3, policy=policy, rng=lambda: 0.0) == 0
    assert backoff_seconds(attempt=3, policy=policy, retry_after=55, rng=lambda: 0.5) == 55


def test_push_goes_to_every_active_device(recording_tenant, make_template, make_recipients):
    make_template(default_channels=["push"])
    (recipient,) = make_recipients(1)
    device_register(recipient=recipient, platform="ios", token="tok-a")
    device_register(recipient=recipient, platform="android", token="tok-b")
    Device.objects.create(tenant=recording_tenant, recipient=recipient, platform="web", token="tok-old", active=False)
    notification = notification_create(
        tenant=recording_tenant, template="order_shipped", payload={"order_id": "5"}, recipients=["user-0"]
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    delivery = Delivery.objects.get(notification=notification)
    deliveries_send(delivery_ids=[delivery.pk])
    record = SinkRecord.objects.get(delivery_id=str(delivery.pk))
    assert sorted(record.to or []) == ["tok-a", "tok-b"]
    assert record.message["title"] == "Shipped" and record.message["data"] == {"order": "5"}


def test_sweeper_takes_back_claims_whose_lease_ran_out(recording_tenant, make_template, make_recipients):
    _, ids = _queued(recording_tenant, make_template, make_recipients, n=2)
    delivery_claim(delivery_ids=ids)  # ... and the worker dies before recording anything
    later = timezone.now() + timedelta(hours=1)
    result = sweep(now=later)
    assert result.leases == 2
    rows = Delivery.objects.filter(pk__in=ids)
    assert {d.status for d in rows} == {"pending"} and {d.error_code for d in rows} == {"lease_expired"}
    assert set(DeliveryAttempt.objects.filter(delivery__in=ids).values_list("outcome", flat=True)) == {"lost"}
    assert dispatch_due(now=later)["deliveries"] == 2
    deliveries_send(delivery_ids=ids)
    assert {d.status for d in Delivery.objects.filter(pk__in=ids)} == {"sent"}
    assert {d.attempts for d in Delivery.objects.filter(pk__in=ids)} == {2}


def test_sweeper_republishes_lost_intents_and_queued_rows(recording_tenant, make_template, make_recipients):
    _, ids = _queued(recording_tenant, make_template, make_recipients, n=1)
    stuck = notification_create(
        tenant=recording_tenant, template="order_shipped", payload={"order_id": "2"}, recipients=["user-0"]
    )
    later = timezone.now() + timedelta(hours=1)
    result = sweep(now=later)
    assert result.intents == 1  # `stuck` was committed but its fan-out never ran
    stuck.refresh_from_db()
    assert stuck.enqueued_at == later
    assert result.queued == 1  # `notification`'s email was queued an hour ago and never claimed
    assert Delivery.objects.get(pk=ids[0]).status == "pending"
