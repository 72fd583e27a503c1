"""Send limits: what may go out now, and when the rest may go. Nothing held back is dropped.

Three limits are checked in the send pipeline, just before a provider is called, each by one
atomic Lua script in Redis (`apps.core.redis_client`) so that concurrent workers share them:

- **per recipient**: at most N messages per channel per rolling hour to one recipient
  (`recipient_per_hour`), a sliding window whose members are delivery ids (a retry of the same
  delivery is not counted twice). Critical categories are exempt.
- **per tenant per day**: a send quota per UTC day (`daily_quota`), per channel and/or for all
  channels together (`"*"`).
- **per provider**: a token bucket (`provider_per_second`: `rate` per second, `burst`), shared by
  every tenant using the environment's account for that provider, or the tenant's own bucket
  when the tenant sets a limit for it (its own account).

Limits come from `settings.SIGNALBOX_RATE_LIMITS`, overridden key by key by
`Tenant.settings["rate_limits"]` (same shape; `null` removes a default). A delivery over a
limit is **held**: it goes back to `pending` with `next_attempt_at` set to when the limit will
let it through, its attempt is not counted, and no provider call or attempt row is made; the
dispatcher sends it then. A check that passed is refunded when a later check holds the
delivery, so a held message never uses up a recipient's or the tenant's allowance.

Redis unreachable: every check passes (logged), because PostgreSQL still guarantees
exactly-once bookkeeping and the providers enforce their own limits.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import F
from django.utils import timezone

from apps.core import redis_client
from apps.notifications import conf
from apps.notifications.models import Delivery
from apps.observability import metrics

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

HOUR = 3600.0
# Deliveries held for long (an hour, a day) are spread over this many extra seconds so they do not
# all return at once; those held by a provider's bucket over one token's time.
SPREAD_SECONDS = 30.0


@dataclass(frozen=True)
class Limits:
    recipient_per_hour: Mapping[str, int] = field(default_factory=dict)
    daily_quota: Mapping[str, int] = field(default_factory=dict)
    provider_per_second: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # Providers whose limit the tenant set itself: counted in the tenant's own bucket.
    own_buckets: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.recipient_per_hour or self.daily_quota or self.provider_per_second)


def _merged(defaults: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def limits_for(tenant_settings: Mapping[str, Any] | None) -> Limits:
    """The limits for a tenant; a malformed entry is logged and ignored (it must never stop sending)."""
    try:
        return _limits_for(tenant_settings)
    except (AttributeError, TypeError, ValueError) as exc:
        log.error("malformed rate limits ignored", extra={"error": f"{type(exc).__name__}: {exc}"})
        return Limits()


def _limits_for(tenant_settings: Mapping[str, Any] | None) -> Limits:
    defaults = conf.wiring().rate_limits
    own: Mapping[str, Any] = (tenant_settings or {}).get("rate_limits") or {}
    recipient = _merged(defaults.get("recipient_per_hour") or {}, own.get("recipient_per_hour") or {})
    quota = _merged(defaults.get("daily_quota") or {}, own.get("daily_quota") or {})
    own_providers = own.get("provider_per_second") or {}
    providers = _merged(defaults.get("provider_per_second") or {}, own_providers)
    buckets: dict[str, tuple[float, float]] = {}
    for name, spec in providers.items():
        rate = float(spec.get("rate", 0)) if isinstance(spec, Mapping) else float(spec)
        burst = float(spec.get("burst", rate)) if isinstance(spec, Mapping) else rate
        if rate > 0:
            buckets[str(name)] = (rate, max(burst, 1.0))
    return Limits(
        recipient_per_hour={str(k): int(v) for k, v in recipient.items() if int(v) > 0},
        daily_quota={str(k): int(v) for k, v in quota.items() if int(v) >= 0},
        provider_per_second=buckets,
        own_buckets=frozenset(str(n) for n, v in own_providers.items() if v is not None),
    )


@dataclass
class Candidate:
    """A delivery about to be sent through a provider."""

    id: Any
    tenant_id: Any
    recipient_id: int
    channel: str
    critical: bool
    limits: Limits


@dataclass(frozen=True)
class Held:
    id: Any
    channel: str
    until: datetime
    reason: str  # recipient_cap | daily_quota | provider_rate | circuit_open
    detail: str


# --- The scripts -----------------------------------------------------------------------------------

# Sliding window per key. KEYS: one window per candidate (keys may repeat). ARGV: now, window,
# then (member, limit) per key. Returns, per key, "new" (admitted and counted), "seen" (this
# delivery was counted before: a retry) or the epoch second at which the oldest counted message
# leaves the window.
_WINDOW = redis_client.Script(
    """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local member, limit = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZSCORE', key, member) then
    out[i] = 'seen'
  elseif redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now, member)
    redis.call('EXPIRE', key, math.ceil(window) + 60)
    out[i] = 'new'
  else
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    out[i] = tostring(tonumber(oldest[2]) + window)
  end
end
return out
"""
)

# A counter with a ceiling. KEYS[1]: the counter. ARGV: limit, wanted, ttl seconds. Returns how
# many of `wanted` fit.
_QUOTA = redis_client.Script(
    """
local limit, wanted, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.max(0, math.min(wanted, limit - used))
if granted > 0 then
  redis.call('INCRBY', KEYS[1], granted)
  redis.call('EXPIRE', KEYS[1], ttl)
end
return granted
"""
)

# A token bucket. KEYS[1]: the bucket (hash tokens, ts). ARGV: rate per second, burst, now, wanted.
# Returns {granted, tokens left (string)}.
_BUCKET = redis_client.Script(
    """
local rate, burst, now, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, ts = burst, now end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
  ts = now
end
local granted = math.max(0, math.min(wanted, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return {granted, tostring(tokens)}
"""
)


def _recipient_key(c: Candidate) -> str:
    return redis_client.key("rl", "recipient", c.tenant_id, c.recipient_id, c.channel)


def _quota_key(tenant_id: Any, scope: str, day: str) -> str:
    return redis_client.key("rl", "quota", tenant_id, scope, day)


def _bucket_key(provider: str, tenant_id: Any, own: bool) -> str:
    return redis_client.key("rl", "provider", tenant_id if own else "env", provider)


def admit(
    *, provider: str, candidates: Sequence[Candidate], now: float | None = None
) -> tuple[list[Candidate], list[Held]]:
    """Splits candidates into those that may be sent now and those held (with when to retry)."""
    if all(c.limits.empty for c in candidates):
        return list(candidates), []
    conn = redis_client.client()
    if conn is None:
        return list(candidates), []
    clock = now if now is not None else time.time()
    try:
        return _admit(conn, provider, list(candidates), clock)
    except redis_client.errors() as exc:
        redis_client.unavailable("send rate limits", exc)
        return list(candidates), []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Admission:
    """One `admit` call's bookkeeping, shared by its checks: who is held, and what each candidate
    took from a recipient window or a quota (given back when a later check holds it)."""

    now: float
    held: dict[int, Held] = field(default_factory=dict)
    window_counted: list[Candidate] = field(default_factory=list)  # added to a recipient window here
    charges: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))  # quota keys charged

    def hold(self, c: Candidate, wait: float, reason: str, detail: str, spread: float = SPREAD_SECONDS) -> None:
        until = datetime.fromtimestamp(self.now + max(wait, 0.0) + random.random() * spread, tz=UTC)
        self.held[id(c)] = Held(c.id, c.channel, until, reason, detail)

    def passing(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        return [c for c in candidates if id(c) not in self.held]


def recipient_windows_check(conn: redis.Redis, admission: Admission, candidates: Sequence[Candidate]) -> None:
    """Per recipient and channel, per rolling hour (critical categories exempt); a retry of a
    delivery already counted passes."""
    now = admission.now
    capped = [c for c in candidates if not c.critical and c.limits.recipient_per_hour.get(c.channel)]
    if not capped:
        return
    args: list[Any] = [repr(now), HOUR]
    for c in capped:
        args += [str(c.id), c.limits.recipient_per_hour[c.channel]]
    answers = _WINDOW(conn, keys=[_recipient_key(c) for c in capped], args=args)
    for c, answer in zip(capped, answers, strict=True):
        text = _text(answer)
        if text == "new":
            admission.window_counted.append(c)
        elif text != "seen":
            limit = c.limits.recipient_per_hour[c.channel]
            detail = f"At most {limit} {c.channel} messages per hour to one recipient."
            admission.hold(c, float(text) - now, "recipient_cap", detail)


def daily_quotas_check(conn: redis.Redis, admission: Admission, candidates: Sequence[Candidate]) -> None:
    """The tenant's daily quota per channel, then for all channels ("*"); the excess waits for
    the next UTC midnight."""
    now = admission.now
    day = datetime.fromtimestamp(now, tz=UTC)
    midnight = (day + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    stamp = day.strftime("%Y%m%d")
    for all_channels in (False, True):
        groups: dict[tuple[Any, str], list[Candidate]] = defaultdict(list)
        for c in admission.passing(candidates):
            scope = "*" if all_channels else c.channel
            if scope in c.limits.daily_quota:
                groups[(c.tenant_id, scope)].append(c)
        for (tenant_id, scope), group in groups.items():
            key = _quota_key(tenant_id, scope, stamp)
            limit = group[0].limits.daily_quota[scope]
            granted = int(_QUOTA(conn, keys=[key], args=[limit, len(group), 2 * 86400]))
            for c in group[:granted]:
                admission.charges[id(c)].append(key)
            what = "messages" if scope == "*" else f"{scope} messages"
            for c in group[granted:]:
                admission.hold(
                    c, midnight - now, "daily_quota", f"The tenant's daily quota of {limit} {what} is used up."
                )


def provider_buckets_check(
    conn: redis.Redis, admission: Admission, provider: str, candidates: Sequence[Candidate]
) -> None:
    """The provider's throughput: the environment's shared bucket, or the tenant's own when it set
    the limit itself; the excess waits its turn of tokens."""
    buckets: dict[tuple[Any, bool], list[Candidate]] = defaultdict(list)
    for c in admission.passing(candidates):
        if provider in c.limits.provider_per_second:
            own = provider in c.limits.own_buckets
            buckets[(c.tenant_id if own else None, own)].append(c)
    for (tenant_id, own), group in buckets.items():
        rate, burst = group[0].limits.provider_per_second[provider]
        granted_raw, left_raw = _BUCKET(
            conn, keys=[_bucket_key(provider, tenant_id, own)], args=[rate, burst, repr(admission.now), len(group)]
        )
        granted, left = int(granted_raw), float(_text(left_raw))
        for position, c in enumerate(group[granted:]):
            wait = (position + 1 - left) / rate
            detail = f"{provider} takes at most {rate:g} messages per second."
            admission.hold(c, wait, "provider_rate", detail, spread=1 / rate)


def held_refund(conn: redis.Redis, admission: Admission, candidates: Sequence[Candidate]) -> None:
    """Gives back what a held delivery took from a recipient window or a quota: it was not sent."""
    if not admission.held:
        return
    pipe = conn.pipeline(transaction=False)
    for c in admission.window_counted:
        if id(c) in admission.held:
            pipe.zrem(_recipient_key(c), str(c.id))
    for c in candidates:
        if id(c) in admission.held:
            for key in admission.charges.get(id(c), ()):
                pipe.decrby(key, 1)
    pipe.execute()


def _admit(
    conn: redis.Redis, provider: str, candidates: list[Candidate], now: float
) -> tuple[list[Candidate], list[Held]]:
    """The three checks in order (a candidate held by one is not counted by the next), then the
    refund of what the held ones took."""
    admission = Admission(now=now)
    recipient_windows_check(conn, admission, candidates)
    daily_quotas_check(conn, admission, candidates)
    provider_buckets_check(conn, admission, provider, candidates)
    held_refund(conn, admission, candidates)
    return admission.passing(candidates), list(admission.held.values())


# --- Holding --------------------------------------------------------------------------------------


def deliveries_hold(held: Sequence[Held]) -> int:
    """Puts claimed deliveries back to `pending` until their time, without spending the attempt."""
    if not held:
        return 0
    table = Delivery._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS d SET status = 'pending', attempts = GREATEST(d.attempts - 1, 0), "  # noqa: S608
                "lease_expires_at = NULL, next_attempt_at = v.until, error_code = v.code, last_error = v.detail "
                "FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[], %s::text[]) AS v(id, until, code, detail) "
                "WHERE d.id = v.id AND d.status = 'sending'",
                [
                    [str(h.id) for h in held],
                    [h.until for h in held],
                    [f"held_{h.reason}"[:64] for h in held],
                    [h.detail[:2000] for h in held],
                ],
            )
            updated = int(cursor.rowcount)
    else:
        updated = 0
        for h in held:
            updated += Delivery.objects.filter(pk=h.id, status=Delivery.Status.SENDING).update(
                status=Delivery.Status.PENDING,
                attempts=F("attempts") - 1,
                lease_expires_at=None,
                next_attempt_at=h.until,
                error_code=f"held_{h.reason}"[:64],
                last_error=h.detail[:2000],
            )
    for h in held:
        metrics.DELIVERIES_HELD.labels(channel=h.channel, reason=h.reason).inc()
    return updated


def held_until_circuit(*, delivery_id: Any, channel: str, until_epoch: float, provider: str = "") -> Held:
    """A delivery whose every provider has an open circuit, or whose retry must go to `provider`
    (an earlier request may have reached it) while that one's is open: back when it closes."""
    until = datetime.fromtimestamp(until_epoch + random.random() * SPREAD_SECONDS / 10, tz=UTC)
    why = (
        f"Waiting for {provider}, which may hold the earlier request; its circuit is open."
        if provider
        else "Every provider of the channel is failing."
    )
    return Held(delivery_id, channel, max(until, timezone.now()), "circuit_open", why)
