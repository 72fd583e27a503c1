"""Request rate limits; DRF answers 429 with Retry-After when one is exceeded.

An API key is limited on its own (its prefix), a recipient token (the in-app inbox) on its
recipient, anything else on the client's address. The counters live in Django's cache, which
every process must share (CACHE_URL=redis://…): with a per-process cache each gunicorn worker
counted alone, and production now refuses one at start (project/production.py).

The client's address is the connecting one (REMOTE_ADDR). X-Forwarded-For is believed only on a
connection from a proxy in SIGNALBOX_TRUSTED_PROXIES, and only as far as it was written by such
proxies: the client is the right-most address that is not a trusted proxy, since everything to
its left was written by the client itself (docs/security.md).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from apps.tenancy.models import ApiKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip())


def trusted_networks() -> tuple[Network, ...]:
    return _networks(tuple(getattr(settings, "SIGNALBOX_TRUSTED_PROXIES", ()) or ()))


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


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            return f"throttle:key:{request.auth.prefix}"
        # A recipient token (apps/notifications/authentication.py) carries its recipient.
        recipient = getattr(request.auth, "recipient", None)
        if recipient is not None:
            return f"throttle:recipient:{recipient.pk}"
        return f"throttle:ip:{self.get_ident(request)}"

    def get_ident(self, request: Request) -> str:
        return client_address(request.META)
