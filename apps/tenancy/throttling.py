"""Request rate limits; DRF answers 429 with Retry-After when one is exceeded.

An API key is limited on its own (its prefix), a recipient token (the in-app inbox) on its
recipient, anything else on the client's address. The counters live in Django's cache, which
every process must share (CACHE_URL=redis://…): with a per-process cache each gunicorn worker
counted alone, and production now refuses one at start (project/production.py).

The client's address is the connecting one (REMOTE_ADDR). X-Forwarded-For is believed only on a
connection from a proxy in SIGNALBOX_TRUSTED_PROXIES, and only as far as it was written by such
proxies: the client is the right-most address that is not a trusted proxy, since everything to
its left was written by the client itself (docs/security.md).

Counting costs one cache round trip per request: a sliding window estimated from two fixed-window
counters (this window's, incremented atomically, and the previous one's, weighted by how much of it
still overlaps the last `duration` seconds). DRF's own throttle read and rewrote a pickled list of
timestamps on every request, which was 17 % of the time of a 304 on a task poll (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from apps.tenancy.conf import tenancy_settings
from apps.tenancy.models import ApiKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip())


def trusted_networks() -> tuple[Network, ...]:
    return _networks(tenancy_settings().trusted_proxies)


def _address(text: str) -> Address | None:
    """An address from one X-Forwarded-For hop: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:443`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(meta: Mapping[str, Any], networks: Sequence[Network] | None = None) -> str:
    """The client's address for this request's META (see the module docstring)."""
    networks = trusted_networks() if networks is None else networks
    remote = str(meta.get("REMOTE_ADDR") or "")
    if not _trusted(_address(remote), networks):
        return remote
    client = remote
    hops = [hop for hop in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # Not an address where a trusted proxy would have written one: stop at the last trusted hop.
            return client
        client = str(address)
        if not _trusted(address, networks):
            return client
    return client  # every hop is a trusted proxy: the left-most one is the client


def redis_client(cache: Any) -> Any | None:
    """The Redis client behind Django's cache, or None when the cache is not Redis."""
    if not isinstance(cache, RedisCache):
        return None
    backend: Any = cache._cache  # type: ignore[attr-defined]  # one per cache object (and so per thread)
    # Django builds a new client, callbacks table and all, on every call (~150 function calls): keep one.
    client = backend.__dict__.get("signalbox_client")
    if client is None:
        client = backend.signalbox_client = backend.get_client(None, write=True)
    return client


# KEYS: (this window, the previous one) per counter, then keys only read; ARGV: each counter's expiry.
# Answers: (this window's count after INCR, the previous one's) per counter, then each read key's value.
COUNT_SCRIPT = """
local out = {}
for i = 1, #ARGV do
  out[#out + 1] = redis.call('INCR', KEYS[2 * i - 1])
  redis.call('EXPIRE', KEYS[2 * i - 1], ARGV[i])
  out[#out + 1] = redis.call('GET', KEYS[2 * i])
end
for j = 2 * #ARGV + 1, #KEYS do
  out[#out + 1] = redis.call('GET', KEYS[j])
end
return out
"""
COUNT_SHA = hashlib.sha1(COUNT_SCRIPT.encode()).hexdigest()  # noqa: S324  (Redis names scripts by SHA-1)


def count_and_read(cache: Any, keys: list[str], expiries: list[int]) -> list[Any]:
    """Runs `COUNT_SCRIPT` (one command, one answer) on a connection of this thread's own: the rate
    limit's counters, and what an API key's authentication reads with them (credentials.admit).

    redis-py's pipeline of the same commands took ~400 function calls (pool checkout with a readiness
    poll, observability counters, a parse per answer): as much as the rest of a 304. On any error the
    connection is dropped (a half-read answer must not stay on the socket) and the error raised."""
    owner = cache._cache
    held = owner.__dict__.get("signalbox_connection")
    if held is None or held[0] != os.getpid():  # never a socket inherited across a fork
        client: Any = redis_client(cache)
        pool = client.connection_pool
        held = owner.signalbox_connection = (os.getpid(), pool.connection_class(**pool.connection_kwargs))
    connection = held[1]
    arguments = (len(keys), *keys, *expiries)
    try:
        connection.send_command("EVALSHA", COUNT_SHA, *arguments)
        try:
            answers: list[Any] = connection.read_response()
        except Exception as error:
            from redis.exceptions import NoScriptError  # redis-py: imported late (scripts/check_imports.py)

            if not isinstance(error, NoScriptError):
                raise
            # The first use since Redis started: send the script itself, which Redis then keeps.
            connection.send_command("EVAL", COUNT_SCRIPT, *arguments)
            answers = connection.read_response()
        return answers
    except Exception:
        connection.disconnect()
        raise


def window_hits(key: str, window: int, duration: int) -> tuple[int, int]:
    """Counts one request in `key`'s window number `window`; returns (this window's count with it,
    the previous window's count). One round trip on Redis (`count_and_read`)."""
    current, previous = f"{key}:{window}", f"{key}:{window - 1}"
    cache = caches["default"]
    if redis_client(cache) is not None:
        count, before = count_and_read(cache, [cache.make_key(current), cache.make_key(previous)], [duration * 2])
        return int(count), int(before or 0)
    cache.add(current, 0, timeout=duration * 2)
    try:
        count = cache.incr(current)
    except ValueError:  # expired between add and incr
        cache.set(current, 1, timeout=duration * 2)
        count = 1
    return int(count), int(cache.get(previous) or 0)


def window_unhit(key: str, window: int) -> None:
    """Takes back a refused request: only requests let through count, as with DRF's own throttle, so a
    client retrying too early does not push its own wait further."""
    with contextlib.suppress(ValueError):  # the counter expired meanwhile
        caches["default"].decr(f"{key}:{window}")


def seconds_until_free(count: int, previous: int, into: float, limit: int, duration: int) -> float:
    """How long until one more request fits: within this window if only the previous window's weight
    is in the way, else into the next one, once this window's count has slid out far enough."""
    if count < limit and previous:
        wait = duration * (1 - (limit - count - 1) / previous) - into
    else:
        wait = duration - into + duration * max(0.0, 1 - (limit - 1) / max(count, 1))
    # Never more than a window: by then every counted request is out of it, whatever the estimate says.
    return min(max(1.0, wait), float(duration))


def api_key_throttle_key(prefix: str) -> str:
    return f"throttle:key:{prefix}"


class ApiKeyRateThrottle(SimpleRateThrottle):
    """At most `num_requests` per `duration` seconds per key, recipient or address (sliding window)."""

    scope = "api_key"
    _retry_after: float | None = None

    def timer(self) -> float:
        return time.time()

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        limit, duration = self.parse_rate(self.rate)
        assert limit is not None and duration is not None
        now = self.timer()
        # The API key's authentication may have counted this request already, in the round trip that
        # read the credentials generation (apps/tenancy/credentials.py): not a second time, and in the
        # window it was counted in.
        counted = getattr(request, "throttle_counted", None) or {}
        hit = counted.get((key, duration))
        if hit is not None:
            window, count, previous = hit
            into = min(now - window * duration, duration)
        else:
            whole, into = divmod(now, duration)
            window = int(whole)
            count, previous = window_hits(key, window, duration)
        if count + previous * (1 - into / duration) <= limit:
            return True
        window_unhit(key, window)
        self._retry_after = seconds_until_free(count - 1, previous, into, limit, duration)
        return False

    def wait(self) -> float | None:
        return self._retry_after

    def window(self) -> tuple[int, int] | None:
        """(window number, duration) now, or None when this throttle has no rate."""
        if self.rate is None:
            return None
        _, duration = self.parse_rate(self.rate)
        assert duration is not None
        return int(self.timer() // duration), duration

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            return api_key_throttle_key(request.auth.prefix)
        # A recipient token (apps/notifications/authentication.py) carries its recipient.
        recipient = getattr(request.auth, "recipient", None)
        if recipient is not None:
            return f"throttle:recipient:{recipient.pk}"
        return f"throttle:ip:{self.get_ident(request)}"

    def get_ident(self, request: Request) -> str:
        return client_address(request.META)
