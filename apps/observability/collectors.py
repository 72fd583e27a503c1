"""Metrics computed at scrape time rather than incremented: how much waits on each queue, and for how long.

`QueueCollector` is registered only in the metrics exporter (`python -m apps.observability.exporter`,
one replica), never in the API or the workers: a queue's depth must still be reported when every
worker that consumes it is down, and one reporter means no duplicate series to de-duplicate.

- `signalbox_queue_depth{queue}`: messages waiting in the broker. On Redis that is the LLEN of the
  queue's list (and of its priority lists), under the broker's `global_keyprefix`; on RabbitMQ (and
  any other kombu transport) the message count of a passive `queue_declare`.
- `signalbox_queue_oldest_age_seconds{queue}`: the age of the oldest intent waiting in PostgreSQL for a
  worker of that queue (the `WaitingSource`s the apps register), 0 when none waits. It keeps growing when messages were
  lost or never published, which the broker depth cannot show.
- `signalbox_queue_collector_up{source}`: 1 when the broker / the database answered this scrape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import structlog
from django.apps import apps
from django.conf import settings
from django.db import close_old_connections, connections
from django.db.models import Min, Q
from django.utils import timezone
from kombu import Connection
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps.observability import metrics
from workers.queues import QUEUE_NAMES

log = structlog.get_logger(__name__)

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+socket")
# kombu's Redis transport keeps a queue's messages of priority p (p > 0) in `<queue>\x06\x16<p>`.
REDIS_PRIORITY_SEPARATOR = "\x06\x16"


def _describe(metric: Any) -> tuple[str, str]:
    described = metric.describe()[0]
    return described.name, described.documentation


# --- Broker depth ------------------------------------------------------------------------------


def _priority_steps() -> Sequence[int]:
    # Late: kombu's Redis transport imports redis-py, which imports OpenTelemetry (LAZY_ALLOWED).
    from kombu.transport.redis import PRIORITY_STEPS

    return PRIORITY_STEPS


def redis_queue_keys(queue: str, *, prefix: str = "", priority_steps: Sequence[int] | None = None) -> list[str]:
    """Every Redis list kombu may hold `queue`'s messages in, with the broker's global key prefix."""
    if priority_steps is None:
        priority_steps = _priority_steps()
    return [prefix + (queue if not step else f"{queue}{REDIS_PRIORITY_SEPARATOR}{step}") for step in priority_steps]


def redis_queue_depths(
    url: str, queues: Iterable[str], *, transport_options: Mapping[str, Any] | None = None, timeout: float = 2.0
) -> dict[str, int]:
    import redis  # late: it imports OpenTelemetry (LAZY_ALLOWED)

    options = transport_options or {}
    prefix = str(options.get("global_keyprefix", ""))
    steps = options["priority_steps"] if "priority_steps" in options else _priority_steps()
    if url.startswith("redis+socket://"):  # kombu's spelling of a Unix socket URL
        url = "unix://" + url.removeprefix("redis+socket://")
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        queues = list(queues)
        with client.pipeline(transaction=False) as pipe:
            for queue in queues:
                for key in redis_queue_keys(queue, prefix=prefix, priority_steps=steps):
                    pipe.llen(key)
            lengths = pipe.execute()
    finally:
        client.close()
    per_queue = len(steps)
    return {queue: int(sum(lengths[i * per_queue : (i + 1) * per_queue])) for i, queue in enumerate(queues)}


def amqp_queue_depths(
    url: str, queues: Iterable[str], *, transport_options: Mapping[str, Any] | None = None, timeout: float = 2.0
) -> dict[str, int]:
    """A passive `queue_declare` per queue (it creates nothing); a queue not declared yet counts 0."""
    depths: dict[str, int] = {}
    with Connection(url, connect_timeout=timeout, transport_options=dict(transport_options or {})) as conn:
        conn.ensure_connection(max_retries=1, timeout=max(1, int(timeout)))
        for queue in queues:
            # A failed passive declare closes the channel (AMQP 404), so each queue gets its own.
            channel: Any = conn.channel()
            try:
                _, message_count, _ = channel.queue_declare(queue=queue, passive=True)
                depths[queue] = int(message_count)
            except conn.channel_errors:
                depths[queue] = 0
            finally:
                # After a 404 the broker has closed the channel already.
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


def broker_queue_depths(
    url: str, queues: Iterable[str], *, transport_options: Mapping[str, Any] | None = None
) -> dict[str, int]:
    scheme = urlsplit(url).scheme.lower()
    if scheme in REDIS_SCHEMES:
        return redis_queue_depths(url, queues, transport_options=transport_options)
    return amqp_queue_depths(url, queues, transport_options=transport_options)


# --- Oldest waiting intent (PostgreSQL) --------------------------------------------------------


@dataclass(frozen=True)
class WaitingSource:
    """Rows that wait for a worker: which model, which rows, since when, and on which queue.

    `waiting(now)` selects the rows; `since` is the field (or expression) they wait since. The queue
    is fixed (`queue`) or read from a field of the row (`queue_field`), mapped through
    `queue_by_value` (a notification's priority to its queue; an empty queue to the default).
    """

    model: str
    waiting: Callable[[datetime], Q]
    since: str | Any
    queue: str = ""
    queue_field: str = ""
    queue_by_value: Mapping[str, str] = field(default_factory=dict)

    def oldest_per_queue(self, now: datetime) -> dict[str, datetime]:
        rows = apps.get_model(self.model)._default_manager.filter(self.waiting(now))
        if not self.queue_field:
            oldest = rows.aggregate(oldest=Min(self.since))["oldest"]
            return {self.queue: oldest} if oldest is not None else {}
        found: dict[str, datetime] = {}
        for row in rows.values(self.queue_field).annotate(oldest=Min(self.since)).order_by():
            value = str(row[self.queue_field] or "")
            queue = self.queue_by_value.get(value, value)
            if row["oldest"] is None or not queue:
                continue
            if queue not in found or row["oldest"] < found[queue]:
                found[queue] = row["oldest"]
        return found


# What waits in PostgreSQL for each queue: each app registers its own from its `AppConfig.ready()`,
# with its models' waiting states (a new intent table that waits on a queue registers a source).
_WAITING_SOURCES: list[WaitingSource] = []


def register_waiting_sources(sources: Iterable[WaitingSource]) -> None:
    """Called from an app's `ready()`; a source registered twice counts once."""
    for source in sources:
        if source not in _WAITING_SOURCES:
            _WAITING_SOURCES.append(source)


def waiting_sources() -> tuple[WaitingSource, ...]:
    return tuple(_WAITING_SOURCES)


def oldest_waiting_ages(sources: Iterable[WaitingSource], *, now: datetime | None = None) -> dict[str, float]:
    """Seconds the oldest waiting row of each queue has waited (queues with none are absent)."""
    now = now or timezone.now()
    ages: dict[str, float] = {}
    for source in sources:
        for queue, since in source.oldest_per_queue(now).items():
            ages[queue] = max(ages.get(queue, 0.0), (now - since).total_seconds())
    return ages


# --- The collector -----------------------------------------------------------------------------


class QueueCollector(Collector):
    """Depth and oldest-waiting age of every queue, read from the broker and the database at each scrape."""

    def __init__(
        self,
        *,
        queues: Sequence[str],
        depths: Callable[[], Mapping[str, int]],
        ages: Callable[[], Mapping[str, float]],
    ) -> None:
        self.queues = tuple(queues)
        self.depths = depths
        self.ages = ages

    @classmethod
    def from_settings(cls) -> QueueCollector:
        return cls(
            queues=QUEUE_NAMES,
            depths=lambda: broker_queue_depths(
                settings.CELERY_BROKER_URL, QUEUE_NAMES, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
            ),
            ages=_database_ages,
        )

    def describe(self) -> list[Any]:
        # Names only, so registering the collector never calls the broker or the database.
        return [
            GaugeMetricFamily(*_describe(metrics.QUEUE_DEPTH), labels=["queue"]),
            GaugeMetricFamily(*_describe(metrics.QUEUE_OLDEST_AGE), labels=["queue"]),
            GaugeMetricFamily(*_describe(metrics.QUEUE_COLLECTOR_UP), labels=["source"]),
        ]

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(*_describe(metrics.QUEUE_COLLECTOR_UP), labels=["source"])

        depth = GaugeMetricFamily(*_describe(metrics.QUEUE_DEPTH), labels=["queue"])
        try:
            depths = self.depths()
        except Exception as exc:
            log.warning("queue depth unavailable", error=f"{type(exc).__name__}: {exc}")
            up.add_metric(["broker"], 0)
        else:
            up.add_metric(["broker"], 1)
            for queue in self.queues:
                depth.add_metric([queue], depths.get(queue, 0))
        yield depth

        age = GaugeMetricFamily(*_describe(metrics.QUEUE_OLDEST_AGE), labels=["queue"])
        try:
            ages = self.ages()
        except Exception as exc:
            log.warning("oldest waiting intent unavailable", error=f"{type(exc).__name__}: {exc}")
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            for queue in self.queues:
                age.add_metric([queue], round(ages.get(queue, 0.0), 3))
        yield age
        yield up


def _database_ages() -> dict[str, float]:
    # Each scrape runs in a thread of its own: open, query, close, so no connection is left behind.
    close_old_connections()
    try:
        return oldest_waiting_ages(waiting_sources())
    finally:
        connections.close_all()
