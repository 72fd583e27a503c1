"""A per-process cache of verified API keys, kept honest by a credentials generation in Redis.

Reading the key's row was one of the two statements of a task poll. A cache with a time-to-live
would break `api_key_revoke`'s promise (a revoked key is refused on the very next request, in every
process). So every process trusts its cache only while a shared *generation* is unchanged:

- every change that can make a key unusable or change what it may do (revoke, rotate, update, a
  tenant saved or deleted, a key deleted) calls `credentials_changed()`, which writes a new random
  generation into Redis at once and again after the commit (the first write for the writer's own
  connection and its tests' transaction, the second so that a process that reloaded the key between
  the two writes, and could have read the row from before the commit, reloads it once more);
- every request reads the generation in the round trip to Redis that its rate limit makes anyway
  (`admit`: one Lua script counts the request in the key's rate-limit window and returns the counts
  and the generation), and uses its cached key only when the generation it was cached under is still
  the current one. The throttle then uses those counts instead of asking again. So a request is
  counted before the permission check (a 403 counts, as any request the key makes), and a wrong
  secret sent with a real key's prefix is counted, then taken back (`uncount`).

Why Redis and not PostgreSQL LISTEN/NOTIFY: a notification arrives at another process *some time*
after the commit, so the very next request there could still be let in; reading the generation in
the same synchronous round trip as the rate limit costs nothing extra and orders strictly after the
revocation's return. A missing generation (Redis restarted, the key evicted) or an unreachable Redis
means nothing is trusted: the key is read from the database, as before. A process that missed a
write behind the services' back (raw SQL, a queryset `update()` in a shell), or a bump lost to a
Redis blip at that moment (logged), is still bounded: entries are reloaded after `MAX_AGE_SECONDS`
whatever the generation says. The cache is keyed by the whole secret, so a hit needs no hash check.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.db import transaction
from rest_framework.request import Request

from apps.core.redis_client import errors as redis_errors
from apps.tenancy.models import ApiKey
from apps.tenancy.throttling import ApiKeyRateThrottle, api_key_throttle_key, count_and_read, redis_client

log = logging.getLogger(__name__)

GENERATION_KEY = "credentials:generation"
MAX_AGE_SECONDS = 60.0
MAX_ENTRIES = 4096


@dataclass(slots=True)
class Entry:
    key: ApiKey
    generation: bytes
    loaded_at: float


_entries: dict[str, Entry] = {}


def _bump() -> None:
    cache = caches["default"]
    client = redis_client(cache)
    if client is None:
        return
    try:
        client.set(cache.make_key(GENERATION_KEY), secrets.token_hex(8))
    except redis_errors():
        # Every process reads the generation from this Redis: while it is unreachable, none trusts its cache.
        log.warning("credentials generation not bumped: Redis unreachable", exc_info=True)


def credentials_changed() -> None:
    """Call after any write that can refuse a key or change its scopes or tenant (see the docstring).
    Nothing to do without a Redis cache: then no process caches keys."""
    if redis_client(caches["default"]) is None:
        return
    _bump()
    transaction.on_commit(_bump)


def admit(request: Request, prefix: str) -> bytes | None:
    """One round trip to Redis: counts this request in the rate limits of the view's `ApiKeyRateThrottle`s
    (remembered on the request for the throttle, `throttle_counted`) and reads the credentials generation.
    None when the cache is not Redis, Redis is unreachable, or no generation is set (then one is set)."""
    cache: Any = caches["default"]
    client = redis_client(cache)
    if client is None:
        return None
    view = (getattr(request, "parser_context", None) or {}).get("view")
    pending: list[tuple[str, int, int]] = []
    if view is not None:
        for throttle in view.get_throttles():
            if isinstance(throttle, ApiKeyRateThrottle) and (now := throttle.window()) is not None:
                pending.append((api_key_throttle_key(prefix), *now))
    keys: list[str] = []
    for key, window, _ in pending:  # what `window_hits` counts, in the same keys
        keys += [cache.make_key(f"{key}:{window}"), cache.make_key(f"{key}:{window - 1}")]
    generation_key = cache.make_key(GENERATION_KEY)
    keys.append(generation_key)
    try:
        answers = count_and_read(cache, keys, [duration * 2 for _, _, duration in pending])
    except Exception:  # the throttle makes its own round trip and meets the same error, or not
        return None
    request.throttle_counted = {  # type: ignore[attr-defined]
        (key, duration): (window, int(answers[i * 2]), int(answers[i * 2 + 1] or 0))
        for i, (key, window, duration) in enumerate(pending)
    }
    generation: bytes | None = answers[-1]
    if generation is None:
        try:
            client.set(generation_key, secrets.token_hex(8), nx=True)
        except redis_errors():
            pass
    return generation


def uncount(request: Request) -> None:
    """Takes back what `admit` counted, for a request whose key turned out unusable: a wrong secret
    sent with someone's prefix must not spend that key's rate limit."""
    counted = getattr(request, "throttle_counted", None) or {}
    cache = caches["default"]
    for (key, _), (window, _, _) in counted.items():
        try:
            cache.decr(f"{key}:{window}")
        except ValueError:  # expired meanwhile
            pass
        except redis_errors():
            pass
    request.throttle_counted = {}  # type: ignore[attr-defined]


def cached_key(raw: str, generation: bytes | None) -> ApiKey | None:
    """The key verified for this exact secret under this generation, if still fresh."""
    if generation is None:
        return None
    entry = _entries.get(raw)
    if entry is None or entry.generation != generation or time.monotonic() - entry.loaded_at > MAX_AGE_SECONDS:
        return None
    return entry.key


def cache_key(raw: str, key: ApiKey, generation: bytes | None) -> None:
    """Remembers a key read from the database under the generation read *before* that read."""
    if generation is None:
        return
    if len(_entries) >= MAX_ENTRIES:
        _entries.pop(next(iter(_entries)))
    _entries[raw] = Entry(key=key, generation=generation, loaded_at=time.monotonic())
