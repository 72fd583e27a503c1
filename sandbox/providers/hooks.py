"""A generic webhook receiver: `POST /hooks/{name}` records headers and the raw body.

If a secret was registered for the name (`POST /_sandbox/webhook-secrets`), the Standard
Webhooks signature is checked with the `standardwebhooks` library: the result is recorded
in `extra.signature_valid`, and an invalid signature is answered 401 as a careful
receiver would. Without a secret every delivery is accepted with 200.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sandbox.context import get_sandbox, header_idempotency_key, request_headers, retry_headers
from sandbox.faults import Fault
from sandbox.state import Message

PROVIDER = "webhook"


def verify(secret: str, raw: bytes, headers: dict[str, str]) -> tuple[bool, str | None]:
    try:
        Webhook(secret).verify(raw, headers, json_parse=False)
    except (WebhookVerificationError, ValueError) as exc:
        return False, str(exc)
    return True, None


def fault_response(fault: Fault) -> web.Response:
    status = fault.status if isinstance(fault.status, int) else 400
    return web.json_response({"error": f"sandbox fault {fault.status}"}, status=status, headers=retry_headers(fault))


async def receive(request: web.Request) -> web.Response:
    store = get_sandbox(request).store
    name = request.match_info["name"]
    raw = await request.read()
    headers = request_headers(request)
    key = request.headers.get("webhook-id") or header_idempotency_key(request)

    fault = store.take_fault(PROVIDER, [name])
    if fault is not None and fault.status is not None:
        await fault.wait()
        response = fault_response(fault)
        store.attempt(PROVIDER, response.status, [name], idempotency_key=key, fault=fault)
        return response

    extra: dict[str, Any] = {
        "method": request.method,
        "query": dict(request.query),
        "content_type": request.content_type,
    }
    try:
        extra["body"] = raw.decode("utf-8")
    except UnicodeDecodeError:
        extra["body"] = None
        extra["body_base64"] = base64.b64encode(raw).decode("ascii")
    try:
        extra["json"] = json.loads(raw) if raw else None
    except ValueError:
        extra["json"] = None

    secret = store.webhook_secrets.get(name)
    valid: bool | None = None
    if secret is not None:
        valid, reason = verify(secret, raw, dict(request.headers))
        extra["signature_error"] = reason
    extra["signature_valid"] = valid

    store.record(
        Message(
            provider=PROVIDER,
            recipient=name,
            provider_message_id=key or "",
            subject=request.headers.get("webhook-event") or request.headers.get("X-Event-Type"),
            text=extra["body"],
            headers=headers,
            idempotency_key=key,
            extra=extra,
        )
    )
    status = 401 if valid is False else 200
    store.attempt(PROVIDER, status, [name], idempotency_key=key, fault=fault)
    if fault is not None:
        await fault.wait()
    if valid is False:
        return web.json_response({"error": "invalid signature", "detail": extra["signature_error"]}, status=401)
    return web.json_response({"ok": True, "signature_valid": valid})


def add_routes(app: web.Application) -> None:
    app.router.add_route("POST", "/hooks/{name}", receive)
    app.router.add_route("PUT", "/hooks/{name}", receive)
