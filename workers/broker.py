"""Keeps a worker alive through a Redis broker restart (kill -9, failover, a restart empty or not).

The bug it works around (Celery 5.7 / kombu 5.7, Redis transport): when the consumer loses the
broker, `Consumer.on_connection_error_after_connected` first calls `connection.collect()`, which
detaches the kombu transport from its connection (`transport.client = None`), and then
`connection.close()`. Closing the channel drops its Redis connection pool and then tries to put
the messages the worker still holds (running `acks_late` tasks) back on their queue; with no
pool it builds a new one from `transport.client.hostname`, and `client` is None:

    Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")

The worker's main process exits and nothing is consumed until something restarts it. The same
happens when a task that was running during the outage finishes and its late ack goes to the old
channel. (`tests/reliability/test_worker_survival.py` reproduces both with a real worker.)

The fix here is one guard: a channel whose transport was detached raises the Redis
`ConnectionError` every caller already handles (channel close ignores it; an ack or reject is
logged as "Couldn't ack"), instead of an AttributeError nobody expects. What the worker could
not ack stays in the old broker's unacked set when it kept its data (redelivered after the
visibility timeout; a send task's claim makes the copy harmless) or is gone with a broker that
restarted empty (the sweeper republishes from PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_installed = False


def install() -> None:
    """Patches the Redis transport once per process (a no-op without redis-py)."""
    global _installed
    if _installed:
        return
    # Late: redis-py imports OpenTelemetry at import (scripts/check_imports.py, LAZY_ALLOWED).
    try:
        import kombu.transport.redis as transport
        import redis
    except ImportError:  # pragma: no cover - the Redis transport is not in use
        return

    channel: Any = transport.Channel  # kombu's stubs do not declare its private helpers
    original = channel._connparams

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:
            raise redis.exceptions.ConnectionError("the broker connection of this channel was already closed")
        return original(self, asynchronous=asynchronous)

    channel._connparams = _connparams
    _installed = True


_publish_client_installed = False


def install_publish_client() -> None:
    """Makes the Redis transport publish through one client per channel instead of a new one each time.

    kombu's `Channel.conn_or_acquire()` builds a `redis.Redis` (its callbacks table, its retry policy:
    about 540 Python calls) around the channel's connection pool for every message it puts, which was a
    tenth of a `POST /api/v1/notifications/` (docs/benchmarks.md "API"). The client holds no connection
    of its own, only that pool, so one per channel, remade whenever the channel's pool is (after a
    reconnection), sends the same commands over the same connections. Installed when the Celery app is
    finalized, in every process that publishes (a no-op without redis-py).
    """
    global _publish_client_installed
    if _publish_client_installed:
        return
    try:  # late, as in `install`
        import kombu.transport.redis as transport
    except ImportError:  # pragma: no cover - the Redis transport is not in use
        return

    channel: Any = transport.Channel
    original = channel.conn_or_acquire

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        cached = self.__dict__.get("_signalbox_publish_client")
        if cached is None or cached.connection_pool is not pool:
            cached = self._create_client()
            self.__dict__["_signalbox_publish_client"] = cached
        yield cached

    conn_or_acquire.__wrapped__ = original  # type: ignore[attr-defined]
    channel.conn_or_acquire = conn_or_acquire
    _publish_client_installed = True
