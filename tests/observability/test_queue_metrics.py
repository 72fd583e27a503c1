"""Queue depth (the broker) and oldest waiting intent (PostgreSQL), computed by the exporter at scrape time."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from kombu import Connection, Exchange, Producer, Queue

from apps.observability.collectors import (
    QueueCollector,
    amqp_queue_depths,
    broker_queue_depths,
    oldest_waiting_ages,
    redis_queue_depths,
    waiting_sources,
)
from tests.conftest import wait_for, worker_env
from tests.observability.conftest import free_port, scrape, value
from workers.queues import QUEUE_NAMES

ROOT = Path(__file__).resolve().parents[2]


def publish(url: str, queue: str, count: int, *, transport_options: dict | None = None, priority: int = 0) -> None:
    exchange = Exchange("signalbox", type="direct")
    with Connection(url, transport_options=transport_options or {}) as conn:
        producer = Producer(conn.default_channel, exchange=exchange)
        for i in range(count):
            producer.publish(
                {"n": i}, routing_key=queue, declare=[Queue(queue, exchange, routing_key=queue)], priority=priority
            )


@pytest.fixture
def redis_prefix():
    prefix = f"sbxtest:depth:{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def test_redis_depth_counts_every_priority_list_under_the_broker_key_prefix(redis_prefix):
    url = settings.CELERY_BROKER_URL
    options = {"global_keyprefix": redis_prefix}
    publish(url, "notifications.high", 3, transport_options=options)
    publish(url, "notifications.high", 2, transport_options=options, priority=6)  # a priority list of its own
    publish(url, "webhooks", 1, transport_options=options)

    depths = redis_queue_depths(url, QUEUE_NAMES, transport_options=options)

    assert depths == {**dict.fromkeys(QUEUE_NAMES, 0), "notifications.high": 5, "webhooks": 1}
    # Without the prefix these are other keys entirely: the option is what makes the number right.
    assert redis_queue_depths(url, ["notifications.high"], transport_options={})["notifications.high"] != 5


def test_amqp_style_depth_is_a_passive_declare_that_creates_nothing():
    url = f"memory://depth-{uuid.uuid4().hex[:6]}"
    publish(url, "tasks", 4)

    assert broker_queue_depths(url, ["tasks", "webhooks"]) == {"tasks": 4, "webhooks": 0}
    assert amqp_queue_depths(url, ["webhooks"]) == {"webhooks": 0}


def test_every_waiting_source_reads_a_real_table(db):
    assert oldest_waiting_ages(waiting_sources()) == {}


def make_waiting_rows(tenant, now):
    """An accepted urgent notification (10 min), a queued normal delivery (5 min), a due task (2 min)."""
    from apps.events.models import Event
    from apps.notifications.models import Category, Delivery, Notification, Recipient
    from apps.tasks.models import TaskExecution

    category = Category.objects.create(tenant=tenant, key="security")
    urgent = Notification.objects.create(tenant=tenant, category=category, channels=["email"], priority="high")
    Notification.objects.filter(pk=urgent.pk).update(created_at=now - timedelta(minutes=10))
    normal = Notification.objects.create(
        tenant=tenant, category=category, channels=["email"], priority="normal", status="dispatched"
    )
    recipient = Recipient.objects.create(tenant=tenant, external_id="u1")
    Delivery.objects.create(
        tenant=tenant,
        notification=normal,
        recipient=recipient,
        channel="email",
        status="queued",
        queued_at=now - timedelta(minutes=5),
    )
    TaskExecution.objects.create(
        tenant=tenant, name="signalbox.exports.deliveries_csv", run_after=now - timedelta(minutes=2)
    )
    TaskExecution.objects.create(tenant=tenant, name="later", run_after=now + timedelta(minutes=30))  # not due
    Event.objects.create(tenant=tenant, type="order.shipped", status="processed")  # not waiting


def test_oldest_waiting_age_per_queue_comes_from_the_intent_tables(tenant):
    now = timezone.now()
    make_waiting_rows(tenant, now)

    ages = oldest_waiting_ages(waiting_sources(), now=now)

    assert ages == {"notifications.high": 600.0, "notifications.default": 300.0, "tasks": 120.0}


def test_a_broker_outage_still_reports_the_database_ages_and_says_what_failed(tenant):
    now = timezone.now()
    make_waiting_rows(tenant, now)

    def broken() -> dict[str, int]:
        return redis_queue_depths("redis://127.0.0.1:1/0", QUEUE_NAMES, timeout=0.5)

    collector = QueueCollector(queues=QUEUE_NAMES, depths=broken, ages=lambda: oldest_waiting_ages(waiting_sources()))
    families = {family.name: family for family in collector.collect()}

    up = {s.labels["source"]: s.value for s in families["signalbox_queue_collector_up"].samples}
    assert up == {"broker": 0, "database": 1}
    assert families["signalbox_queue_depth"].samples == []  # unknown, not zero
    ages = {s.labels["queue"]: s.value for s in families["signalbox_queue_oldest_age_seconds"].samples}
    assert set(ages) == set(QUEUE_NAMES)
    assert ages["notifications.high"] >= 600


@pytest.mark.worker
def test_the_exporter_serves_depth_and_age_for_every_queue(transactional_db, tenant, redis_prefix):
    make_waiting_rows(tenant, timezone.now())
    publish(settings.CELERY_BROKER_URL, "digests", 2, transport_options={"global_keyprefix": redis_prefix})
    port = free_port()
    # The production settings module: the test one forces each xdist worker's own broker prefix.
    env = worker_env(DJANGO_SETTINGS_MODULE="project.settings", CELERY_BROKER_KEYPREFIX=redis_prefix)
    exporter = subprocess.Popen(
        [sys.executable, "-m", "apps.observability.exporter", "--port", str(port), "--addr", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        samples = wait_for(lambda: _try_scrape(f"http://127.0.0.1:{port}/metrics"), timeout=30, message="the exporter")
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)

    for queue in QUEUE_NAMES:
        assert ("signalbox_queue_depth", frozenset({("queue", queue)})) in samples
    assert value(samples, "signalbox_queue_depth", queue="digests") == 2
    assert value(samples, "signalbox_queue_oldest_age_seconds", queue="notifications.high") >= 600
    assert value(samples, "signalbox_queue_collector_up", source="broker") == 1
    assert value(samples, "signalbox_queue_collector_up", source="database") == 1
    assert exporter.returncode == 0  # SIGTERM is a clean stop


def _try_scrape(url: str):
    try:
        return scrape(url)
    except OSError:
        return None
