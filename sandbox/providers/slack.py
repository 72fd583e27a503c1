"""Slack incoming webhooks and the Web API's `chat.postMessage`.

Webhooks (`POST /slack/services/{T}/{B}/{token}`) answer the way hooks.slack.com does:
200 `ok` in text/plain, or an error word such as `invalid_payload` (400), `no_service`
(404), `action_prohibited` (403) or `channel_is_archived` (410). The Web API
(`POST /slack/api/chat.postMessage`) answers 200 with `{"ok": false, "error": ...}` for
errors, as Slack does, and 429 with `Retry-After` when rate limited.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aiohttp import web

from sandbox.context import get_sandbox, header_idempotency_key, lookup_key, request_headers, retry_headers
from sandbox.faults import Fault
from sandbox.state import Message

PROVIDER = "slack"

# Incoming-webhook error texts and their HTTP statuses.
WEBHOOK_ERRORS: dict[str, int] = {
    "invalid_payload": 400,
    "no_text": 400,
    "too_many_attachments": 400,
    "user_not_found": 400,
    "no_service_id": 400,
    "no_team": 400,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "invalid_token": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "team_disabled": 404,
    "channel_is_archived": 410,
    "rate_limited": 429,
    "internal_error": 500,
    "service_unavailable": 503,
}
STATUS_TEXTS = {400: "invalid_payload", 403: "action_prohibited", 404: "no_service", 410: "channel_is_archived",
                429: "rate_limited", 500: "internal_error", 503: "service_unavailable"}  # fmt: skip


async def _payload(request: web.Request) -> dict[str, Any] | None:
    """A JSON body, or the `payload` field of a form post (both are accepted by Slack)."""
    try:
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            raw = form.get("payload")
            if raw is None:
                return {key: str(value) for key, value in form.items()}
            body = json.loads(str(raw))
        else:
            body = json.loads(await request.read())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _has_content(body: dict[str, Any]) -> bool:
    return bool(body.get("text") or body.get("blocks") or body.get("attachments"))


def _idempotency_key(request: web.Request, body: dict[str, Any] | None) -> str | None:
    metadata = (body or {}).get("metadata")
    event_payload = metadata.get("event_payload") if isinstance(metadata, dict) else None
    return lookup_key(event_payload, ("idempotency_key",)) or header_idempotency_key(request)


# -- incoming webhooks -------------------------------------------------------------------


def webhook_fault_response(fault: Fault) -> web.Response:
    if isinstance(fault.status, str):
        text = fault.status
        status = WEBHOOK_ERRORS.get(text, 400)
    else:
        status = fault.status or 500
        text = STATUS_TEXTS.get(status, "error")
    return web.Response(status=status, text=text, headers=retry_headers(fault))


async def incoming_webhook(request: web.Request) -> web.Response:
    store = get_sandbox(request).store
    info = request.match_info
    hook = f"{info['team']}/{info['bot']}/{info['token']}"
    body = await _payload(request)
    key = _idempotency_key(request, body)

    fault = store.take_fault(PROVIDER, [hook])
    if fault is not None and fault.status is not None:
        await fault.wait()
        response = webhook_fault_response(fault)
        store.attempt(PROVIDER, response.status, [hook], idempotency_key=key, fault=fault)
        return response
    if body is None:
        store.attempt(PROVIDER, 400, [hook], idempotency_key=key, fault=fault)
        return web.Response(status=400, text="invalid_payload")
    if not _has_content(body):
        store.attempt(PROVIDER, 400, [hook], idempotency_key=key, fault=fault)
        return web.Response(status=400, text="no_text")

    store.record(
        Message(
            provider=PROVIDER,
            recipient=hook,
            provider_message_id=f"{time.time():.6f}",
            sender=body.get("username"),
            text=body.get("text"),
            headers=request_headers(request),
            idempotency_key=key,
            extra={"api": "incoming_webhook", "payload": body},
        )
    )
    store.attempt(PROVIDER, 200, [hook], idempotency_key=key, fault=fault)
    if fault is not None:
        await fault.wait()
    return web.Response(text="ok")


# -- Web API -----------------------------------------------------------------------------


def channel_id(channel: str) -> str:
    """Slack answers with channel IDs even when given a name; make a stable fake one."""
    if channel[:1] in ("C", "D", "G") and channel[1:].isalnum() and channel.isupper():
        return channel
    return "C" + hashlib.sha1(channel.encode("utf-8"), usedforsecurity=False).hexdigest()[:10].upper()


def api_error(error: str, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"ok": False, "error": error}, status=status, headers=headers)


def api_fault_response(fault: Fault) -> web.Response:
    headers = retry_headers(fault)
    if isinstance(fault.status, str):
        return api_error(fault.status, headers=headers)
    status = fault.status or 500
    if status == 429:
        return api_error("ratelimited", status=429, headers={"Retry-After": "1", **headers})
    return api_error("fatal_error" if status >= 500 else "invalid_arguments", status=status, headers=headers)


async def chat_post_message(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    store = sandbox.store
    body = await _payload(request)
    key = _idempotency_key(request, body)
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or (body or {}).get("token")
    if not token:
        store.attempt(PROVIDER, "not_authed", [], idempotency_key=key)
        return api_error("not_authed")
    if token != sandbox.config.slack_bot_token:
        store.attempt(PROVIDER, "invalid_auth", [], idempotency_key=key)
        return api_error("invalid_auth")
    if body is None:
        store.attempt(PROVIDER, "invalid_json", [], idempotency_key=key)
        return api_error("invalid_json")
    channel = str(body.get("channel") or "")

    fault = store.take_fault(PROVIDER, [channel])
    if fault is not None and fault.status is not None:
        await fault.wait()
        response = api_fault_response(fault)
        store.attempt(PROVIDER, fault.status, [channel], idempotency_key=key, fault=fault)
        return response
    if not channel:
        store.attempt(PROVIDER, "channel_not_found", [], idempotency_key=key, fault=fault)
        return api_error("channel_not_found")
    if not _has_content(body):
        store.attempt(PROVIDER, "no_text", [channel], idempotency_key=key, fault=fault)
        return api_error("no_text")

    ts = f"{time.time():.6f}"
    store.record(
        Message(
            provider=PROVIDER,
            recipient=channel,
            provider_message_id=ts,
            sender=body.get("username"),
            text=body.get("text"),
            headers=request_headers(request),
            idempotency_key=key,
            extra={"api": "chat.postMessage", "payload": body},
        )
    )
    store.attempt(PROVIDER, 200, [channel], idempotency_key=key, fault=fault)
    if fault is not None:
        await fault.wait()
    message = {
        "type": "message",
        "text": body.get("text", ""),
        "user": "U0SANDBOX01",
        "bot_id": "B0SANDBOX01",
        "ts": ts,
        "team": "T0SANDBOX01",
    }
    if body.get("blocks"):
        message["blocks"] = body["blocks"]
    if body.get("thread_ts"):
        message["thread_ts"] = body["thread_ts"]
    return web.json_response({"ok": True, "channel": channel_id(channel), "ts": ts, "message": message})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/slack/services/{team}/{bot}/{token}", incoming_webhook)
    app.router.add_post("/slack/api/chat.postMessage", chat_post_message)
