"""Fault injection through real Celery workers: killed worker processes, a broker restarted without
persistence, a crash between COMMIT and publish, one message delivered to two workers, database
connections dropped mid-send, and a provider that answers 500s, 429s, timeouts and slowly.

Each test ends with `assert_delivered_once`: every delivery settled exactly once (or dead/failed
with its reason), nothing stuck, the sandbox's counts matching the database's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.db import connection
from django.utils import timezone

from apps.notifications import tasks
from apps.notifications.models import Delivery, DeliveryAttempt, Notification, Suppression
from apps.notifications.services.dispatch import sweep
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from sandbox.testing import SandboxClient
from tests.conftest import ROOT, wait_for, worker_env
from tests.reliability.conftest import (
    assert_delivered_once,
    broker_at,
    far_future,
    in_flight,
    node_of,
    people,
    ready,
    reset_pools,
    sandbox_counts,
    send,
    settle,
)

pytestmark = [pytest.mark.worker, pytest.mark.slow]

BULK = "notifications.bulk"
FAST = {"NOTIFICATIONS_RETRY_BASE_SECONDS": "0.2", "NOTIFICATIONS_SEND_BATCH_SIZE": "4"}


def idle(worker: Any) -> bool:
    """The worker answers and runs no task (a send it was in the middle of has finished or died)."""
    from workers.celery import app

    try:
        node = node_of(worker, timeout=1.0)
        active = app.control.inspect(destination=[node], timeout=1.0).active() or {} if node else {}
    except (OSError, ValueError, RuntimeError, redis.RedisError):  # this process's broker connection was cut too
        reset_pools()
        return False
    return bool(active) and not any(active.values())


def sandbox_messages(client: SandboxClient, provider: str = "twilio") -> int:
    return len(client.messages(provider))


def test_killed_worker_children_and_then_the_worker_itself_lose_and_duplicate_nothing(
    sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any, own_queue: Any
):
    # Given a worker of our own sending slowly (each SMS is accepted, then answered 300 ms later)
    own_queue(BULK)
    first = ready(start_worker(queues=BULK, concurrency=2, **FAST))
    sandbox_client.add_fault("twilio", delay_ms=300)
    notification = send(sandboxed, people(16), ["sms", "in_app"])

    # When its children are killed in the middle of their batches
    wait_for(lambda: sandbox_messages(sandbox_client) >= 3, timeout=30, message="sends under way")
    for pid in first.children():
        os.kill(pid, signal.SIGKILL)
    # ... and, once their replacements are sending, the whole worker with them
    seen = sandbox_messages(sandbox_client)
    wait_for(lambda: sandbox_messages(sandbox_client) >= seen + 2, timeout=30, message="replacement children sending")
    children = first.children()
    os.kill(first.proc.pid, signal.SIGKILL)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    first.proc.wait(timeout=10)
    assert in_flight([notification.pk]) > 0  # work was lost with them

    # Then the sweeper (their leases run out) and a new worker finish everything, once
    sandbox_client.clear_faults()
    recovered = sweep(now=far_future())
    assert recovered.leases >= 2
    ready(start_worker(queues=BULK, concurrency=2, **FAST))
    settle([notification.pk], timeout=60)
    lost = DeliveryAttempt.objects.filter(delivery__notification=notification, outcome="lost").count()
    assert lost >= 2  # the claims of the killed processes were recovered as lost attempts
    counted = assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=4)
    assert counted == {"sent": 16, "delivered": 16}
    assert Delivery.objects.filter(notification=notification, channel="in_app").count() == 16


def test_a_broker_restarted_without_persistence_loses_nothing(
    sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any, redis_server: Any
):
    with broker_at(redis_server.url):
        # Given a worker on a Redis of our own, in the middle of slow sends
        worker = ready(start_worker(queues=BULK, concurrency=2, CELERY_BROKER_URL=redis_server.url, **FAST))
        sandbox_client.add_fault("twilio", delay_ms=200)
        notification = send(sandboxed, people(16), ["sms"])
        wait_for(lambda: sandbox_messages(sandbox_client) >= 3, timeout=30, message="sends under way")

        # When Redis restarts empty: queued messages are gone, running tasks lose their connection
        redis_server.restart()
        sandbox_client.clear_faults()
        wait_for(lambda: idle(worker), timeout=60, interval=0.5, message="the worker to reconnect and go idle")
        assert in_flight([notification.pk]) > 0

        # Then the sweeper puts everything back on the new, empty broker, and it is all sent once
        settle([notification.pk], sweep_first=True, timeout=60)
        counted = assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=2)
    assert counted == {"sent": 16}


def test_a_crash_between_commit_and_publish_is_recovered_by_the_sweeper(
    sandboxed: Any, sandbox_client: SandboxClient, worker: Any, monkeypatch: pytest.MonkeyPatch
):
    # A process commits an intent and dies before its on-commit publish runs
    script = (
        "import os, django; django.setup()\n"
        "from django.db import transaction\n"
        "from apps.notifications.services.notifications import notification_create\n"
        "from apps.tenancy.models import Tenant\n"
        "with transaction.atomic():\n"
        "    transaction.on_commit(lambda: os._exit(0))  # runs before the publish it precedes\n"
        "    n = notification_create(tenant=Tenant.objects.get(slug='acme'), content={'sms': {'text': 'Hi'}},\n"
        "        recipients=[{'external_id': 'ada', 'phone': '+14155550100'}], channels=['sms'])\n"
        "    print(n.pk, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=worker_env(), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    crashed = Notification.objects.get(pk=done.stdout.strip().splitlines()[-1])
    # ... and a request whose publish fails (the broker is unreachable at that moment)
    monkeypatch.setattr(tasks.fan_out, "apply_async", lambda *a, **kw: (_ for _ in ()).throw(OSError("broker down")))
    unpublished = send(sandboxed, people(2), ["sms"], priority="normal")
    monkeypatch.undo()

    time.sleep(1)
    assert Notification.objects.get(pk=crashed.pk).status == "accepted"
    assert Notification.objects.get(pk=unpublished.pk).status == "accepted"
    assert sandbox_counts(sandbox_client) == {}

    # The sweeper publishes both (it finds intents accepted but never fanned out)
    assert sweep(now=timezone.now() + timedelta(minutes=5)).intents == 2
    settle([crashed.pk, unpublished.pk], timeout=60)
    assert assert_delivered_once(sandbox_client, [crashed.pk, unpublished.pk], max_interrupted=0) == {"sent": 3}


def test_one_message_delivered_to_two_workers_is_sent_once(
    sandboxed: Any, sandbox_client: SandboxClient, worker: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch
):
    # Two worker processes consume the bulk queue: the session's and one of this test's
    ready(start_worker(queues=BULK, concurrency=1))
    # Deliveries queued, their send task not yet published
    with monkeypatch.context() as patched:
        for task in (tasks.fan_out, tasks.send_batch):
            patched.setattr(task, "apply_async", lambda *args, **kwargs: None)
        notification = send(sandboxed, people(6), ["sms"])
        for chunk_id in notification_fan_out(notification_id=notification.pk):
            fanout_chunk_run(chunk_id=chunk_id)
    ids = [str(pk) for pk in Delivery.objects.filter(notification=notification).values_list("pk", flat=True)]
    sandbox_client.add_fault("twilio", delay_ms=150)

    # The same message twice (a redelivery, a sweeper republish racing the original), at once
    for _ in range(2):
        tasks.send_batch.apply_async(args=(ids,), queue=BULK)

    settle([notification.pk], timeout=60)
    assert len(sandbox_client.requests("twilio")) == 6
    assert DeliveryAttempt.objects.filter(delivery__notification=notification).count() == 6
    assert assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=0) == {"sent": 6}


def test_database_connections_dropped_mid_send_are_survived_without_marking_anything_twice(
    sandboxed: Any, sandbox_client: SandboxClient, worker: Any
):
    sandbox_client.add_fault("twilio", delay_ms=250)
    notification = send(sandboxed, people(12), ["sms"], priority="normal")
    wait_for(lambda: sandbox_messages(sandbox_client) >= 2, timeout=30, message="sends under way")

    # Every other session on the database is terminated (the workers' too), twice, while they send
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchone()[0] >= 1
        time.sleep(0.6)

    settle([notification.pk], timeout=60, idle=lambda: idle(worker))
    counted = assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=0)
    assert counted == {"sent": 12}
    assert DeliveryAttempt.objects.filter(delivery__notification=notification).count() == 12  # none twice


def test_bursts_of_500s_429s_timeouts_and_slow_answers_end_sent_once_or_failed_with_a_reason(
    sandboxed: Any, sandbox_client: SandboxClient, sandbox: Any, worker: Any
):
    # Per-recipient faults first (the first matching rule applies), then the bursts
    sandbox_client.add_fault("twilio", 21211, match="+14155551000")  # permanent for this recipient
    sandbox_client.add_fault("twilio", 503, match="+14155551001", timeout=3, times=1)  # hangs past the timeout
    sandbox_client.add_fault("twilio", match="+14155551002", timeout=3, times=1)  # accepted, answer lost
    sandbox_client.add_fault("twilio", 429, retry_after=1, times=3)
    sandbox_client.add_fault("twilio", delay_ms=200, times=3)  # slow but fine
    sandbox_client.add_fault("sendgrid", 500, times=2)
    sandbox_client.add_fault("webhook", 502, times=2)
    audience = people(6, webhook_url=f"{sandbox.http_url}/hooks/burst")
    notification = send(sandboxed, audience, ["sms", "email", "webhook"], priority="normal")

    settle([notification.pk], timeout=60, ahead=timedelta(0))  # real time: Retry-After must hold

    got = {
        (d.recipient.external_id, d.channel): d
        for d in Delivery.objects.filter(notification=notification).select_related("recipient")
    }
    assert (got[("p-0", "sms")].status, got[("p-0", "sms")].error_code) == ("failed", "21211")
    assert Suppression.objects.filter(address="+14155551000", reason="invalid_address").exists()
    assert got[("p-1", "sms")].status == "sent"
    assert DeliveryAttempt.objects.filter(delivery=got[("p-1", "sms")], error_code="timeout").exists()
    # A 429 with Retry-After: 1 was retried no sooner than a second later
    rate_limited = DeliveryAttempt.objects.filter(delivery__notification=notification, error_code="20429")
    assert rate_limited.exists()
    for attempt in rate_limited:
        after = DeliveryAttempt.objects.get(delivery_id=attempt.delivery_id, number=attempt.number + 1)
        assert after.created_at - attempt.created_at >= timedelta(seconds=1)
    # SendGrid's 500s failed over to SMTP
    assert DeliveryAttempt.objects.filter(delivery__notification=notification, provider="smtp", outcome="accepted")
    counted = assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=1)
    assert counted == {"sent": 17, "failed": 1}
    # The one whose answer was lost reached Twilio twice, both times with its delivery id as the key
    assert sandbox_client.count("twilio", str(got[("p-2", "sms")].pk)) == 2
