"""Circuit breakers for channel providers: a provider that keeps failing is skipped for a while.

Each (scope, provider name) has a breaker in Redis (`apps.core.redis_client`), changed only by
one Lua script, so every worker process sees and moves the same state atomically:

- **closed**: transient failures are counted in a window (`WINDOW_SECONDS`, starting at the
  first failure); reaching `FAILURES` opens the breaker;
- **open** for `COOLDOWN_SECONDS`: the send pipeline skips the provider and uses the next one
  in the channel's chain (or, when every provider of the chain is open, holds the delivery in
  PostgreSQL until the first breaker closes; no attempt is spent);
- **half-open** after the cool-down (for one more window): traffic flows again; one transient
  failure reopens it at once, a success closes it.

A success with no failure in the same batch resets the count. Permanent errors (a bad
address, a refused message) say nothing about the provider's health and are not counted, and
the notification app's built-in adapters (inbox, sinks) are not remote services: the send
pipeline keeps no breaker for them. The
scope is the tenant: one tenant's broken credentials or traffic never trip another tenant's
breaker. When Redis is unreachable every breaker reads as closed.

Settings: `SIGNALBOX_CIRCUIT_BREAKER = {"FAILURES", "WINDOW_SECONDS", "COOLDOWN_SECONDS"}`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.core import redis_client
from apps.core.conf import as_mapping
from apps.observability import metrics
from apps.providers.base import Provider

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5
    window_seconds: float = 60.0
    cooldown_seconds: float = 30.0


def breaker_settings() -> BreakerSettings:
    raw = as_mapping(
        settings.SIGNALBOX_CIRCUIT_BREAKER,
        "SIGNALBOX_CIRCUIT_BREAKER",
        known=("FAILURES", "WINDOW_SECONDS", "COOLDOWN_SECONDS"),
    )
    try:
        values = BreakerSettings(
            failures=int(raw.get("FAILURES", BreakerSettings.failures)),
            window_seconds=float(raw.get("WINDOW_SECONDS", BreakerSettings.window_seconds)),
            cooldown_seconds=float(raw.get("COOLDOWN_SECONDS", BreakerSettings.cooldown_seconds)),
        )
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured("SIGNALBOX_CIRCUIT_BREAKER values must be numbers.") from exc
    if values.failures < 1 or values.window_seconds <= 0 or values.cooldown_seconds <= 0:
        raise ImproperlyConfigured("SIGNALBOX_CIRCUIT_BREAKER values must be positive.")
    return values


def _keys(scope: Any, name: str) -> list[str]:
    base = ("circuit", str(scope), name)
    return [redis_client.key(*base, "failures"), redis_client.key(*base, "open"), redis_client.key(*base, "probation")]


# KEYS: failures counter, open marker (value: open-until epoch seconds), probation marker.
# ARGV: failures in this batch, successes in this batch, threshold, window ms, cool-down ms, now (s).
_RECORD = redis_client.Script(
    """
local failed, succeeded = tonumber(ARGV[1]), tonumber(ARGV[2])
local threshold, window, cooldown, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if failed == 0 then
  if succeeded > 0 then redis.call('DEL', KEYS[1], KEYS[3]) end
  return 'closed'
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'open' end
local count = threshold
if redis.call('EXISTS', KEYS[3]) == 0 then
  count = redis.call('INCRBY', KEYS[1], failed)
  if count == failed then redis.call('PEXPIRE', KEYS[1], window) end
end
if count >= threshold then
  redis.call('SET', KEYS[2], tostring(now + cooldown / 1000), 'PX', cooldown)
  redis.call('SET', KEYS[3], '1', 'PX', cooldown + window)
  redis.call('DEL', KEYS[1])
  return 'opened'
end
return 'closed'
"""
)


def record(*, scope: Any, provider: str, failures: int, successes: int, now: float | None = None) -> str:
    """Counts a batch's transient failures and successes; returns `closed`, `open` or `opened`."""
    if failures <= 0 and successes <= 0:
        return "closed"
    conn = redis_client.client()
    if conn is None:
        return "closed"
    cfg = breaker_settings()
    args = [
        failures,
        successes,
        cfg.failures,
        int(cfg.window_seconds * 1000),
        int(cfg.cooldown_seconds * 1000),
        repr(now if now is not None else time.time()),
    ]
    try:
        state = _RECORD(conn, keys=_keys(scope, provider), args=args)
    except redis_client.errors() as exc:
        redis_client.unavailable("circuit breaker", exc)
        return "closed"
    state = state.decode() if isinstance(state, bytes) else str(state)
    if state == "opened":
        metrics.CIRCUIT_OPENED.labels(provider=provider).inc()
    return state


def open_until(*, scope: Any, providers: Sequence[str]) -> dict[str, float]:
    """The providers whose breaker is open now, each with the epoch second it closes at."""
    names = list(dict.fromkeys(providers))
    conn = redis_client.client()
    if conn is None or not names:
        return {}
    try:
        values = conn.mget([_keys(scope, name)[1] for name in names])
    except redis_client.errors() as exc:
        redis_client.unavailable("circuit breaker", exc)
        return {}
    return {name: float(value) for name, value in zip(names, values, strict=True) if value is not None}


def reset(*, scope: Any, provider: str) -> None:
    """Closes a breaker (operators, tests)."""
    conn = redis_client.client()
    if conn is not None:
        conn.delete(*_keys(scope, provider))


def choose(
    chain: Sequence[Provider], attempt: int, *, is_open: Mapping[str, float], prefer: str = ""
) -> Provider | None:
    """The provider for this attempt: the chain's turn for it (attempt 1 the first, each retry
    the next, wrapping), or the next one in chain order whose breaker is closed; None when every
    provider of the chain is open.

    `prefer` names the provider an earlier request may still have reached (its answer was lost, or
    its worker died mid-request): while its breaker is closed the retry goes there again, where
    the same idempotency key and its callbacks can absorb a copy, instead of failing over."""
    if not chain:
        return None
    if prefer and prefer not in is_open:
        for candidate in chain:
            if candidate.name == prefer:
                return candidate
    start = (max(attempt, 1) - 1) % len(chain)
    for offset in range(len(chain)):
        candidate = chain[(start + offset) % len(chain)]
        if candidate.name not in is_open:
            return candidate
    return None
