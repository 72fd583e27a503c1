"""Turning a provider's answer into a `SendResult`: the rules every adapter shares.

Transient: 408, 425, 429 and 5xx answers, timeouts and connection errors (try again later,
or another provider now). Permanent: every other 4xx. `Retry-After` is read as seconds or as
an HTTP date; SendGrid's `X-RateLimit-Reset` (an epoch second) counts too.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from urllib3.exceptions import ProtocolError

from apps.core.net import RedirectRefused, UnresolvableHost, UnsafeUrl
from apps.providers.base import SendResult

TRANSIENT_STATUSES = frozenset({408, 425, 429})
# The longest wait a provider may ask for; anything longer is a provider bug or a clock skew.
MAX_RETRY_AFTER = 3600.0


def is_transient_status(status: int) -> bool:
    return status in TRANSIENT_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds to wait, from `Retry-After` (seconds or HTTP date) or `X-RateLimit-Reset` (epoch)."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    value = lowered.get("retry-after", "").strip()
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                seconds = None
    if seconds is None and lowered.get("x-ratelimit-reset", "").strip():
        try:
            seconds = float(lowered["x-ratelimit-reset"]) - time.time()
        except ValueError:
            seconds = None
    if seconds is None:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def from_status(
    provider: str,
    status: int,
    *,
    code: str = "",
    detail: str = "",
    headers: Mapping[str, Any] | None = None,
) -> SendResult:
    """The result for an error answer with this HTTP status (never call it for a 2xx)."""
    code = code or f"http_{status}"
    detail = detail or f"HTTP {status}"
    if is_transient_status(status):
        return SendResult.transient(
            provider, detail, code=code, status_code=status, retry_after=parse_retry_after(headers)
        )
    return SendResult.permanent(provider, detail, code=code, status_code=status)


def from_network_error(provider: str, exc: BaseException) -> SendResult | None:
    """A transient result for timeouts and connection failures; None for anything else.

    The egress guard's refusals (apps/core/net.py) count here too, whichever SDK they rose through:
    an internal address or a redirect is permanent (the config or address must change), a name
    that does not resolve transient. Their messages name the host and address, never an answer.
    """
    if isinstance(exc, RedirectRefused):
        return SendResult.permanent(provider, exc.message, code=exc.code, status_code=exc.status)
    if isinstance(exc, UnsafeUrl):
        return SendResult.permanent(provider, exc.message, code=exc.code)
    if isinstance(exc, UnresolvableHost):
        return SendResult.transient(provider, exc.message, code=exc.code)
    if isinstance(exc, (requests.Timeout, socket.timeout, TimeoutError)):
        return SendResult.transient(provider, f"Timed out: {exc}", code="timeout")
    if isinstance(exc, (requests.ConnectionError, ConnectionError)):
        return SendResult.transient(provider, f"Connection failed: {exc}", code="connection_error")
    if isinstance(exc, OSError):
        # urllib wraps socket errors in URLError (an OSError); its `reason` says which.
        reason = getattr(exc, "reason", None)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return SendResult.transient(provider, f"Timed out: {reason}", code="timeout")
        return SendResult.transient(provider, f"Connection failed: {exc}", code="connection_error")
    return None


def sent_then_lost(exc: BaseException) -> bool:
    """Whether a `requests` call failed after the request was written, so the provider may have it."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ReadTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        # "Connection aborted." (urllib3's ProtocolError) is an answer lost after sending; a
        # refused or unresolvable host arrives as MaxRetryError before anything was sent.
        reason = exc.args[0] if exc.args else None
        return isinstance(reason, ProtocolError)
    return False


def from_message_error(provider: str, exc: BaseException) -> SendResult | None:
    """A permanent result when the message itself cannot be built or encoded; None for anything else.

    Django's mail refuses a header with a line break (`BadHeaderError`, a ValueError: a CRLF in a
    subject would otherwise inject headers), and an address or header that cannot be encoded
    raises a ValueError too: the same message fails the same way on every retry.
    """
    if isinstance(exc, ValueError):  # BadHeaderError, UnicodeError
        return SendResult.permanent(provider, truncate(f"Invalid message: {exc}"), code="invalid_message")
    return None


def truncate(text: Any, limit: int = 500) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
