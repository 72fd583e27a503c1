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
import ipaddress
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


def window_hits(key: str, window: int, duration: int) -> tuple[int, int]:
    """Counts one request in `key`'s window number `window`; returns (this window's count with it,
    the previous window's count). One round trip on Redis: INCR, EXPIRE and GET in a pipeline."""
    current, previous = f"{key}:{window}", f"{key}:{window - 1}"
    cache = caches["default"]
    client = redis_client(cache)
    if client is not None:
        made = cache.make_key(current)
        pipe = client.pipeline(transaction=False)
        pipe.incr(made)
        pipe.expire(made, duration * 2)
        pipe.get(cache.make_key(previous))
        count, _, before = pipe.execute()
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
