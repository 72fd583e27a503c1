"""The Redis that holds shared, short-lived counters: rate-limit windows and token buckets, and
provider circuit breakers.

The URL is `SIGNALBOX_REDIS_URL`, else the Celery broker's when the broker is Redis; with
neither, `client()` answers None and callers behave as if no limit were configured. Every key
starts with the broker's `global_keyprefix` (test runs set one each, so they never share a
counter), then `sbx:`.

Callers treat Redis as an optimisation of safety, never as the source of truth: when it is
unreachable they fail open (send now, log a warning) rather than hold messages back forever;
PostgreSQL still guarantees that nothing is lost or sent twice.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings

from apps.core.conf import core_settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

# A Redis that does not answer within this long is treated as down for this call.
SOCKET_TIMEOUT_SECONDS = 0.5


def errors() -> tuple[type[Exception], ...]:
    """What a call to Redis raises when Redis is unreachable or refuses (`except errors():`),
    without importing redis-py where no client was made."""
    import redis

    return (redis.RedisError,)


def redis_url() -> str:
    url = core_settings().redis_url
    if url:
        return url
    broker = str(settings.CELERY_BROKER_URL)
    return broker if broker.startswith(("redis://", "rediss://", "unix://")) else ""


@functools.cache
def _client_for(url: str) -> redis.Redis:
    # Late: redis-py imports OpenTelemetry when it is installed, and tracing is off by default
    # (scripts/check_imports.py, LAZY_ALLOWED). redis-py's pool notices a fork and reconnects in
    # the child, so prefork workers may share this.
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        health_check_interval=30,
    )


def client() -> redis.Redis | None:
    """The shared client, or None when no Redis is configured."""
    url = redis_url()
    return _client_for(url) if url else None


def key(*parts: Any) -> str:
    """`<broker global_keyprefix>sbx:<part>:<part>…`"""
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    prefix = str(options.get("global_keyprefix", "") or "")
    return prefix + "sbx:" + ":".join(str(p) for p in parts)


class Script:
    """A Lua script registered lazily on whichever client is current (EVALSHA, EVAL on a cache miss)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._registered: dict[int, Any] = {}

    def __call__(self, conn: redis.Redis, *, keys: list[str], args: list[Any]) -> Any:
        script = self._registered.get(id(conn))
        if script is None:
            script = self._registered[id(conn)] = conn.register_script(self.source)
        return script(keys=keys, args=args, client=conn)


def unavailable(what: str, exc: Exception) -> None:
    """Logs that a Redis-backed check was skipped because Redis did not answer."""
    log.warning("redis unavailable; %s proceeds without it", what, extra={"error": f"{type(exc).__name__}: {exc}"})
