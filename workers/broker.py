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
