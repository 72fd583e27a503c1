"""Outbound HTTP to tenant-supplied URLs, guarded against SSRF.

A tenant chooses where Signalbox sends webhooks, so a URL must never reach the platform's own
network (metadata services, the database, Redis). `resolve_public_address` resolves the host
once and refuses private, loopback, link-local, multicast and reserved addresses;
`PinnedAddressAdapter` then connects to exactly that address — a second DNS answer cannot
rebind the name to an internal one — while sending the real `Host` header and TLS SNI, and
checking the certificate against the real host name. `safe_post` puts the two together, with
no redirects and no proxies from the environment.

`SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = True` lets private addresses through (tests, on-premises).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from apps.core.errors import Unprocessable

MAX_RESPONSE_BYTES = 64 * 1024


class UnsafeUrl(Unprocessable):
    """The URL is malformed, or its host resolves to an address Signalbox must not call."""

    code = "unsafe_url"


class UnresolvableHost(Unprocessable):
    code = "unresolvable_host"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why `ip` may not be called, or None."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:10.0.0.1 is 10.0.0.1
        ip = mapped
    if ip.is_multicast or ip.is_unspecified:
        return "a multicast or unspecified address"
    if allow_private:
        return None
    for label, flag in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),  # before private: Python counts it as private too
        ("a private address", ip.is_private),
        ("a reserved address", ip.is_reserved),
    ):
        if flag:
            return label
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, …
        return "a non-public address"
    return None


def allow_private_default() -> bool:
    return bool(getattr(settings, "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE", False))


def resolve_public_address(url: str, *, allow_private: bool | None = None) -> tuple[str, str, int]:
    """Resolves the URL's host once; returns (ip, host, port) or raises `UnsafeUrl`/`UnresolvableHost`.

    Every address the name resolves to must be allowed, so a name cannot mix a public address
    with an internal one and hope the internal one is picked.
    """
    if allow_private is None:
        allow_private = allow_private_default()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"Not a valid URL: {exc}.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("Only absolute http:// and https:// URLs can be called.")
    if parts.username or parts.password:
        raise UnsafeUrl("URLs with credentials in them are refused; use a secret in the path or a signature.")
    host = parts.hostname
    port = port or _default_port(parts.scheme)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"The host {host!r} does not resolve.") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnresolvableHost(f"The host {host!r} does not resolve.")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        reason = _refusal(ip, allow_private=allow_private)
        if reason:
            raise UnsafeUrl(f"The host {host!r} resolves to {reason} ({ip}); Signalbox does not call it.")
    return addresses[0], host, port


class PinnedAddressAdapter(HTTPAdapter):
    """Connects to `ip` instead of resolving the URL's host again; TLS still verifies `host`."""

    def __init__(self, *, ip: str, host: str, **kwargs: Any) -> None:
        self._ip = ip
        self._host = host
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(params)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        if str(host_params.get("host", "")).strip("[]").lower() != self._host.strip("[]").lower():
            raise UnsafeUrl("The request host changed after its address was checked.")
        host_params["host"] = self._ip
        if host_params.get("scheme") == "https":
            pool_kwargs["server_hostname"] = self._host
            pool_kwargs["assert_hostname"] = self._host
        return host_params, pool_kwargs

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        # The connection is to the IP, so http.client would name the IP in Host: name the host.
        if "Host" not in request.headers:
            parts = urlsplit(request.url or "")
            request.headers["Host"] = _host_header(self._host, parts.port or _default_port(parts.scheme), parts.scheme)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _host_header(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == _default_port(scheme) else f"{shown}:{port}"


def safe_post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool | None = None,
) -> tuple[requests.Response, bytes]:
    """POSTs to a checked, pinned address; no redirects followed, at most 64 KiB of the answer read.

    Returns the response and the start of its body. Raises `UnsafeUrl`, `UnresolvableHost`, or
    `requests.RequestException` (timeouts, refused connections, TLS errors).
    """
    ip, host, _ = resolve_public_address(url, allow_private=allow_private)
    with requests.Session() as session:
        session.trust_env = False  # an environment proxy would connect by name and skip the pin
        adapter = PinnedAddressAdapter(ip=ip, host=host, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        response = session.post(
            url,
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
        try:
            content = response.raw.read(MAX_RESPONSE_BYTES, decode_content=True) or b""
        except Exception:  # a body cut short still leaves a status to record
            content = b""
        finally:
            response.close()
    return response, content
