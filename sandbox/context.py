"""The per-process objects every handler needs, and small HTTP helpers they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox.config import SandboxConfig
from sandbox.faults import Fault
from sandbox.state import Store

IDEMPOTENCY_HEADERS = ("Idempotency-Key", "X-Idempotency-Key")


@dataclass
class Sandbox:
    config: SandboxConfig
    store: Store
    # A service account the sandbox made itself (GET /_sandbox/fcm/service-account).
    own_service_account: dict[str, Any] | None = None


SANDBOX = web.AppKey("sandbox", Sandbox)


def get_sandbox(request: web.Request) -> Sandbox:
    return request.app[SANDBOX]


def base_url(request: web.Request) -> str:
    """The URL clients reached us at, to build URIs that point back here."""
    return f"{request.scheme}://{request.host}"


def header_idempotency_key(request: web.Request) -> str | None:
    for name in IDEMPOTENCY_HEADERS:
        if value := request.headers.get(name):
            return value
    return None


def lookup_key(mapping: Any, names: tuple[str, ...]) -> str | None:
    """A string value from a dict whose key matches one of `names`, ignoring case and -/_."""
    if not isinstance(mapping, dict):
        return None
    wanted = {n.lower().replace("-", "_") for n in names}
    for key, value in mapping.items():
        if isinstance(key, str) and key.lower().replace("-", "_") in wanted and value:
            return str(value)
    return None


def retry_headers(fault: Fault | None) -> dict[str, str]:
    if fault is None or fault.retry_after is None:
        return {}
    return {"Retry-After": str(fault.retry_after)}


def request_headers(request: web.Request) -> dict[str, str]:
    """Request headers as a plain dict; repeated ones joined with a comma, credentials masked."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.lower() == "authorization":
            # Keep the scheme for debugging, never the secret.
            value = value.split(" ", 1)[0] + " ***"
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers
