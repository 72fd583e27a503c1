"""The egress guard: every outbound connection to a destination a tenant or a recipient chooses.

A tenant chooses where Signalbox sends webhooks and where its own provider accounts live (a
SendGrid host, a Twilio or Slack base URL, an FCM endpoint and the key's `token_uri`, an SMTP
relay), and a recipient may bring a chat or webhook URL. None of them may reach the platform's
own network (metadata services, the database, Redis). So every such connection goes through
this module, whichever client makes it:

- `check_host` resolves the name **once** (through `resolver`, the one DNS hook) and refuses it
  unless every address is public (`address_refusal`: loopback, private, link-local, site-local,
  multicast, unspecified, reserved, shared and documentation ranges, 6to4, Teredo, NAT64, and
  IPv4-mapped or -compatible forms judged by the IPv4 inside them);
- the connection is made to exactly that checked address — a second DNS answer cannot rebind
  the name — while the `Host` header, TLS SNI and the certificate check keep the real name;
- no redirect is followed: a 3xx is returned as it is (`safe_post`, whose callers record it) or
  refused (`RedirectRefused`, in the SDK transports), and the redirect target is never fetched.

The transports, one per kind of client:

- our own POSTs (the webhook channel, Teams, Discord, Slack incoming webhooks, outbound
  webhooks): `safe_post`, through `PinnedAddressAdapter`;
- `requests` sessions inside SDKs (Twilio, pyfcm, google-auth's token fetch): `guarded_session()`,
  whose `GuardedAdapter` checks and pins every request;
- `urllib` inside SDKs (SendGrid's python_http_client, slack_sdk's WebClient): `guarded_opener()`;
- `smtplib`, through Django's SMTP backend: `GuardedSMTP` and `GuardedSMTP_SSL`.

None of them uses proxies from the environment (a proxy would connect by name and skip the pin).

`SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = True` is the one switch that lets private, loopback,
link-local and translated addresses through (tests, the development sandbox, on-premises);
multicast and unspecified addresses stay refused, and pinning and the redirect rule stay on.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import smtplib
import socket
import ssl
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from apps.core.conf import core_settings
from apps.core.errors import Unprocessable

MAX_RESPONSE_BYTES = 64 * 1024


class UnsafeUrl(Unprocessable):
    """The URL is malformed, or its host resolves to an address Signalbox must not call."""

    code = "unsafe_url"


class RedirectRefused(UnsafeUrl):
    """The destination answered a redirect; the guard follows none (the target is never fetched)."""

    code = "redirect"

    def __init__(self, status: int) -> None:
        super().__init__(f"The destination answered {status} (a redirect); redirects are not followed.")
        self.status = status


class UnresolvableHost(Unprocessable):
    code = "unresolvable_host"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 ranges that carry traffic on to an IPv4 address chosen by whoever holds the name: a relay
# or translator outside our view would take it anywhere, internal networks included.
TRANSLATED_RANGES = (
    (ipaddress.ip_network("2002::/16"), "a 6to4 address"),
    (ipaddress.ip_network("2001::/32"), "a Teredo address"),
    (ipaddress.ip_network("64:ff9b::/96"), "a NAT64 address"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "a NAT64 address"),
)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or -compatible (`::a.b.c.d`) one."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if int(ip) >> 32 == 0 and int(ip) > 1:  # `::` and `::1` are themselves, not IPv4
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why Signalbox may not connect to `ip`, or None when it may."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:  # ::ffff:10.0.0.1 reaches 10.0.0.1
        reason = address_refusal(embedded, allow_private=allow_private)
        return f"{reason} inside an IPv6 address" if reason else None
    if ip.is_multicast or ip.is_unspecified:
        return "a multicast or unspecified address"
    if allow_private:
        return None
    for network, label in TRANSLATED_RANGES:
        if ip.version == 6 and ip in network:
            return label
    for label, flag in (
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),  # before private: Python counts it as private too
        ("a site-local address", getattr(ip, "is_site_local", False)),
        ("a reserved address", ip.is_reserved),
        ("a private address", ip.is_private),
    ):
        if flag:
            return label
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, …
        return "a non-public address"
    return None


def allow_private_default() -> bool:
    return core_settings().webhooks_allow_private


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the system's order of preference."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# The guard's one DNS lookup. Tests replace it (monkeypatch `apps.core.net.resolver`) to make a
# name answer what DNS cannot be made to answer here: a rebinding, a private address.
resolver: Callable[[str, int], list[str]] = system_resolver


def check_host(host: str, port: int, *, allow_private: bool | None = None) -> str:
    """Resolves `host` once and returns the address to connect to, or raises `UnsafeUrl`/`UnresolvableHost`.

    Every address the name resolves to must be allowed, so a name cannot mix a public address
    with an internal one and hope the internal one is picked.
    """
    if allow_private is None:
        allow_private = allow_private_default()
    host = host.strip("[]")
    try:
        addresses = list(dict.fromkeys(resolver(host, port)))
    except (OSError, UnicodeError) as exc:
        raise UnresolvableHost(f"The host {host!r} does not resolve.") from exc
    if not addresses:
        raise UnresolvableHost(f"The host {host!r} does not resolve.")
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError as exc:
            raise UnsafeUrl(f"The host {host!r} resolves to something that is not an address.") from exc
        reason = address_refusal(ip, allow_private=allow_private)
        if reason:
            raise UnsafeUrl(f"The host {host!r} resolves to {reason} ({ip}); Signalbox does not call it.")
    return addresses[0]


def resolve_public_address(url: str, *, allow_private: bool | None = None) -> tuple[str, str, int]:
    """Checks an http(s) URL and resolves its host once; returns (ip, host, port)."""
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
    return check_host(host, port, allow_private=allow_private), host, port


def guarded_connection(
    host: str,
    port: int,
    timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # type: ignore[attr-defined]
    source_address: Any = None,
    *,
    allow_private: bool | None = None,
) -> socket.socket:
    """A TCP connection to the checked address of `host` (for clients that open their own sockets)."""
    ip = check_host(host, port, allow_private=allow_private)
    return socket.create_connection((ip, port), timeout, source_address)


# --- requests ---------------------------------------------------------------------------------------


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _host_header(host: str, port: int, scheme: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == _default_port(scheme) else f"{shown}:{port}"


def _pin(params: dict[str, Any], pool_kwargs: dict[str, Any], *, ip: str, host: str) -> None:
    """Points a urllib3 pool at `ip` while TLS keeps naming and verifying `host`."""
    params["host"] = ip
    if params.get("scheme") == "https":
        pool_kwargs["server_hostname"] = host
        pool_kwargs["assert_hostname"] = host


class _PinningAdapter(HTTPAdapter):
    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        # The connection is to the IP, so http.client would name the IP in Host: name the host.
        if "Host" not in request.headers:
            parts = urlsplit(request.url or "")
            host = self._header_host(parts.hostname or "")
            request.headers["Host"] = _host_header(host, parts.port or _default_port(parts.scheme), parts.scheme)

    def _header_host(self, url_host: str) -> str:
        return url_host


class PinnedAddressAdapter(_PinningAdapter):
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
        _pin(host_params, pool_kwargs, ip=self._ip, host=self._host)
        return host_params, pool_kwargs

    def _header_host(self, url_host: str) -> str:
        return self._host


class GuardedAdapter(_PinningAdapter):
    """For `requests` sessions an SDK drives: checks and pins the host of every request itself.

    Proxies are ignored, SDK retries are off (`max_retries=0`), and a 3xx answer raises
    `RedirectRefused` before its body is read, whatever the session's `allow_redirects`.
    """

    def __init__(self, *, allow_private: bool | None = None, **kwargs: Any) -> None:
        self._allow_private = allow_private
        kwargs.setdefault("max_retries", 0)
        super().__init__(**kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> Any:
        ip, host, _ = resolve_public_address(request.url or "", allow_private=self._allow_private)
        params, kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_params: dict[str, Any] = dict(params)
        pool_kwargs: dict[str, Any] = dict(kwargs)
        _pin(host_params, pool_kwargs, ip=ip, host=host)
        return host_params, pool_kwargs

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        response = super().send(request, stream=True, timeout=timeout, verify=verify, cert=cert, proxies=None)
        if 300 <= response.status_code < 400:
            response.close()
            raise RedirectRefused(response.status_code)
        if not stream:
            response.content  # noqa: B018 - read now, as a non-streamed send would
        return response


def guarded_session(*, allow_private: bool | None = None) -> requests.Session:
    """A `requests` session whose every request goes through `GuardedAdapter`."""
    session = requests.Session()
    session.trust_env = False  # no proxies or netrc from the environment
    adapter = GuardedAdapter(allow_private=allow_private)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def safe_post(
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow_private: bool | None = None,
) -> tuple[requests.Response, bytes]:
    """POSTs to a checked, pinned address; no redirects followed, at most 64 KiB of the answer read.

    Returns the response and the start of its body (a 3xx comes back as it is, for the caller to
    record; its target is not fetched). Raises `UnsafeUrl`, `UnresolvableHost`, or
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


# --- urllib -----------------------------------------------------------------------------------------


class _GuardedConnect:
    """For http.client connections: the socket goes to the checked address; Host and SNI keep the name."""

    def __init__(self, *args: Any, allow_private: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allow_private = allow_private
        self._create_connection = self._guarded_create_connection

    def _guarded_create_connection(self, address: tuple[str, int], *args: Any) -> socket.socket:
        return guarded_connection(address[0], address[1], *args, allow_private=self._allow_private)


class GuardedHTTPConnection(_GuardedConnect, http.client.HTTPConnection):
    pass


class GuardedHTTPSConnection(_GuardedConnect, http.client.HTTPSConnection):
    pass


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, *, allow_private: bool | None) -> None:
        super().__init__()
        self._allow_private = allow_private

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(GuardedHTTPConnection, allow_private=self._allow_private), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, *, allow_private: bool | None, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self._allow_private = allow_private
        self._ssl_context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = functools.partial(GuardedHTTPSConnection, allow_private=self._allow_private)
        return self.do_open(connection, req, context=self._ssl_context)


class _RefuseRedirects(urllib.request.HTTPErrorProcessor):
    """Error answers become `HTTPError` as usual; a 3xx is refused, never followed."""

    def http_response(self, request: urllib.request.Request, response: Any) -> Any:
        if 300 <= response.status < 400:
            response.close()
            raise RedirectRefused(response.status)
        return super().http_response(request, response)

    https_response = http_response


def guarded_opener(
    *, allow_private: bool | None = None, context: ssl.SSLContext | None = None
) -> urllib.request.OpenerDirector:
    """A urllib opener for http(s) only, through the guard: no proxies, no redirects, no other schemes."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        _GuardedHTTPHandler(allow_private=allow_private),
        _GuardedHTTPSHandler(allow_private=allow_private, context=context),
        urllib.request.HTTPDefaultErrorHandler(),
        _RefuseRedirects(),
        urllib.request.UnknownHandler(),
    ):
        opener.add_handler(handler)
    return opener


# --- smtplib ----------------------------------------------------------------------------------------


class GuardedSMTP(smtplib.SMTP):
    """smtplib connecting to the checked address; STARTTLS still verifies the host name."""

    allow_private: bool | None = None

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return guarded_connection(host, port, timeout, self.source_address, allow_private=self.allow_private)


class GuardedSMTP_SSL(smtplib.SMTP_SSL, GuardedSMTP):
    """Implicit TLS: `SMTP_SSL._get_socket` wraps the guarded socket, naming the host for SNI."""
