"""A large audience passes a step in a bounded number of statements (no task, no query per
recipient), and a worker killed in the middle of a step loses and repeats nothing."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.flows.models import FlowRun
from apps.flows.services.engine import flow_start, flows_advance, flows_sweep
from apps.notifications.models import Delivery, Recipient, SinkRecord, Topic, TopicMembership
from apps.notifications.services.notifications import notification_create
from tests.conftest import wait_for
from tests.flows.conftest import sent
from tests.reliability.conftest import ready

N = 10_000


@pytest.mark.django_db
def test_ten_thousand_recipients_pass_a_delay_in_a_few_statements_per_chunk(
    tenant: Any, make_template: Any, make_recipients: Any, make_flow: Any
):
    # Given 10,000 subscribers of a topic and a flow that waits an hour
    make_template()
    recipients = make_recipients(N)
    topic = Topic.objects.create(tenant=tenant, key="everyone")
    TopicMembership.objects.bulk_create([TopicMembership(topic=topic, recipient=r) for r in recipients])
    make_flow(
        {
            "key": "wait",
            "template": "order_shipped",
            "steps": [
                {"id": "hour", "type": "delay", "duration": "1h"},
                {"id": "mail", "type": "send", "channels": ["email"]},
            ],
        }
    )
    notification = notification_create(tenant=tenant, flow="wait", payload={"order_id": "A-1"}, topic="everyone")
    start = timezone.now()

    # When the flow starts and every run enters the delay
    with CaptureQueriesContext(connection) as starting:
        assert flow_start(notification_id=notification.pk, now=start) == N
    with CaptureQueriesContext(connection) as entering:
        flows_advance(now=start)
    assert FlowRun.objects.filter(notification_id=notification.pk, step="hour", phase="wait").count() == N

    # ... and the hour is over
    with CaptureQueriesContext(connection) as releasing:
        result = flows_advance(now=start + timedelta(hours=1, seconds=1))

    # Then every run is done, and the statements spent depend on the chunks, not the recipients
    assert FlowRun.objects.filter(notification_id=notification.pk, status="done").count() == N
    chunks = result.chunks
    assert chunks == N // 1000  # the release and the send step due at once, in the same chunk
    assert Delivery.objects.filter(notification=notification, channel="email", status="queued").count() == N
    assert len(starting.captured_queries) <= 12, [q["sql"][:80] for q in starting.captured_queries]
    # Entering the delay, per chunk: the claim, the instance load, the moves, the open-runs check.
    assert len(entering.captured_queries) <= 6 * (N // 1000) + 6, len(entering.captured_queries)
    # Releasing: the same, plus for the send the fan-out's own constant set (preferences,
    # suppressions, the bulk insert, ...) and the read-back of what was created.
    assert len(releasing.captured_queries) <= 30 * chunks, len(releasing.captured_queries)
    # ... and each run was written once for both steps, its history saying both
    run = FlowRun.objects.filter(notification_id=notification.pk).first()
    assert run is not None
    assert [h["event"] for h in run.history] == ["delayed", "released", "sent"]
    print(
        f"statements: start {len(starting.captured_queries)}, enter {len(entering.captured_queries)}, "
        f"release+send {len(releasing.captured_queries)} for {N} runs in {chunks} chunks"
    )


@pytest.mark.worker
def test_a_worker_killed_while_advancing_a_step_loses_and_repeats_nothing(
    recording_tenant: Any, make_template: Any, make_recipients: Any, make_flow: Any, start_worker: Any, own_queue: Any
):
    # Given a worker of our own (the session's worker is not running: the queue is ours) and a
    # flow that sends an email and an SMS to 3,000 recipients, 500 at a time
    make_template(
        default_channels=["email"],
        content={
            "default": {
                "email": {"subject": "Hi", "text": "Order {{ order_id }}"},
                "sms": {"text": "Order {{ order_id }}"},
            }
        },
    )
    make_recipients(3000, phone="+14155550100")
    make_flow(
        {
            "key": "both",
            "template": "order_shipped",
            "steps": [
                {"id": "mail", "type": "send", "channels": ["email"]},
                {"id": "text", "type": "send", "channels": ["sms"]},
            ],
        }
    )
    own_queue("notifications.bulk")
    worker = ready(start_worker(queues="notifications.bulk", concurrency=1))
    notification = notification_create(
        tenant=recording_tenant,
        flow="both",
        payload={"order_id": "A-1"},
        topic=None,
        recipients=[f"user-{i}" for i in range(3000)],
        priority="bulk",
    )

    # When it is SIGKILLed while runs are claimed, part way through
    wait_for(
        lambda: FlowRun.objects.filter(notification_id=notification.pk, status="running").exists(),
        timeout=60,
        message="a step under way",
    )
    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    assert FlowRun.objects.filter(notification_id=notification.pk, status__in=FlowRun.ACTIVE).exists()

    # Then the sweeper gives the claimed runs back once their lease is over, a new worker goes on,
    # and every recipient got each message exactly once
    flows_sweep(now=timezone.now() + timedelta(minutes=5))
    ready(start_worker(queues="notifications.bulk", concurrency=2))
    flows_advance()
    wait_for(
        lambda: FlowRun.objects.filter(notification_id=notification.pk, status="done").count() == 3000,
        timeout=90,
        message="every run done",
    )
    wait_for(lambda: len(sent("email")) + len(sent("sms")) >= 6000, timeout=90, message="every message sent")
    deliveries = Delivery.objects.filter(notification=notification)
    assert deliveries.count() == 6000
    per_delivery = SinkRecord.objects.values_list("delivery_id", flat=True)
    assert len(per_delivery) == len(set(per_delivery)) == 6000
    sends = [
        sum(1 for h in r.history if h["event"] == "sent")
        for r in FlowRun.objects.filter(notification_id=notification.pk)
    ]
    assert set(sends) == {2}  # each step ran once per recipient: the killed chunk had committed nothing
    assert Recipient.objects.count() == 3000
