"""Playing provider callbacks: SendGrid Event Webhook posts and Twilio status callbacks.

Both are signed exactly as the providers sign them, so a receiver's real verification code
(`EventWebhook.verify_signature`, Twilio's `RequestValidator`) can be tested against them.
Events can name a recorded message (`sandbox_message_id`), and the sandbox fills in what
the provider would have sent about it: address, provider ids and custom args.

They are played on request (`POST /_sandbox/callbacks/sendgrid|twilio`) or, once configured
(`POST /_sandbox/auto-callbacks`), automatically for every message the provider accepts, after
`delay_ms`: SendGrid events (default `processed`, `delivered`) to the configured Event Webhook
URL, each carrying the message's custom args (the delivery id among them); Twilio status
callbacks (default `sent`, `delivered`) to each message's own `StatusCallback` (or `url`). A
message accepted by a request that then hangs (a `timeout` fault without status) is reported
all the same, as the real providers would: that is how a client whose answer was lost learns
what happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.request_validator import RequestValidator

from sandbox.keys import sign_event_webhook
from sandbox.state import Message, Store

log = logging.getLogger(__name__)

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
POST_TIMEOUT = aiohttp.ClientTimeout(total=10)


class CallbackError(ValueError):
    """A callback request sent to the control API is malformed."""


def sendgrid_events(store: Store, events: Any) -> list[dict[str, Any]]:
    """Complete events the way SendGrid sends them: each with a unique `sg_event_id`."""
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise CallbackError("events must be a list of objects.")
    completed = []
    for given in events:
        event = dict(given)
        message_ref = event.pop("sandbox_message_id", None)
        if message_ref is not None:
            message = store.find_message(str(message_ref))
            if message is None or message.provider != "sendgrid":
                raise CallbackError(f"No SendGrid message {message_ref!r} was recorded.")
            # Unique args (custom_args) arrive as top-level keys in SendGrid events.
            defaults = {
                **message.extra.get("custom_args", {}),
                "email": message.recipient,
                "sg_message_id": message.extra.get("sg_message_id"),
                "smtp-id": f"<{message.provider_message_id}@sandbox.sendgrid.net>",
                "category": message.extra.get("categories") or [],
            }
            event = {**defaults, **event}
        event.setdefault("event", "delivered")
        event.setdefault("timestamp", int(time.time()))
        event.setdefault("sg_event_id", secrets.token_urlsafe(16)[:22])
        completed.append(event)
    return completed


def twilio_params(store: Store, body: dict[str, Any], account_sid: str) -> dict[str, str]:
    """A status callback form: from a recorded message (`message_sid`, `status`) and/or `params`."""
    params: dict[str, str] = {}
    message_sid = body.get("message_sid")
    if message_sid is not None:
        message = store.find_message(str(message_sid))
        if message is None or message.provider != "twilio":
            raise CallbackError(f"No Twilio message {message_sid!r} was recorded.")
        status = str(body.get("status") or "delivered")
        params = {
            "AccountSid": account_sid,
            "ApiVersion": "2010-04-01",
            "From": message.sender or "",
            "MessageSid": message.provider_message_id,
            "MessageStatus": status,
            "SmsSid": message.provider_message_id,
            "SmsStatus": status,
            "To": message.recipient,
        }
        if message.extra.get("form", {}).get("MessagingServiceSid"):
            params["MessagingServiceSid"] = message.extra["form"]["MessagingServiceSid"]
        if body.get("error_code") is not None:
            params["ErrorCode"] = str(body["error_code"])
    extra = body.get("params") or {}
    if not isinstance(extra, dict):
        raise CallbackError("params must be an object of form fields.")
    params.update({str(k): str(v) for k, v in extra.items()})
    if not params:
        raise CallbackError("Give message_sid or params.")
    return params


def twilio_callback_url(store: Store, body: dict[str, Any]) -> str:
    url = body.get("url")
    if not url and body.get("message_sid"):
        message = store.find_message(str(body["message_sid"]))
        url = message.extra.get("status_callback") if message else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CallbackError("url is required (or a message_sid whose message had a StatusCallback).")
    return url


async def post(url: str, data: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """Deliver a callback and report what the receiver answered."""
    try:
        async with (
            aiohttp.ClientSession(timeout=POST_TIMEOUT) as session,
            session.post(url, data=data, headers=headers) as response,
        ):
            return {"status": response.status, "response_body": await response.text()}
    except (aiohttp.ClientError, TimeoutError) as exc:
        return {"status": None, "error": f"{type(exc).__name__}: {exc}"}


async def play_sendgrid(store: Store, *, url: str, events: Any, seed: str) -> dict[str, Any]:
    completed = sendgrid_events(store, events)
    payload = json.dumps(completed).encode("utf-8")
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "SendGrid Event API",
        SENDGRID_SIGNATURE_HEADER: sign_event_webhook(seed, timestamp, payload),
        SENDGRID_TIMESTAMP_HEADER: timestamp,
    }
    result = await post(url, payload, headers)
    return {**result, "url": url, "payload": payload.decode("utf-8"), "headers": headers, "events": completed}


async def play_twilio(store: Store, *, body: dict[str, Any], account_sid: str, auth_token: str) -> dict[str, Any]:
    url = twilio_callback_url(store, body)
    params = twilio_params(store, body, account_sid)
    signature = RequestValidator(auth_token).compute_signature(url, params)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        TWILIO_SIGNATURE_HEADER: signature,
    }
    result = await post(url, urlencode(params).encode("ascii"), headers)
    return {**result, "url": url, "params": params, "headers": headers}


# --- Automatic callbacks --------------------------------------------------------------------------

AUTO_DEFAULTS = {"sendgrid": ("processed", "delivered"), "twilio": ("sent", "delivered")}
_running: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones


def auto_callback_from_json(body: Any) -> dict[str, Any]:
    """Validate `POST /_sandbox/auto-callbacks`: provider, url, events (or statuses), delay_ms."""
    if not isinstance(body, dict) or body.get("provider") not in AUTO_DEFAULTS:
        raise CallbackError(f"provider must be one of {', '.join(AUTO_DEFAULTS)}.")
    provider = body["provider"]
    url = body.get("url")
    if provider == "sendgrid" and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise CallbackError("url (the Event Webhook URL) is required for sendgrid.")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise CallbackError("url must be an http(s) URL.")
    kinds = body.get("events", body.get("statuses", list(AUTO_DEFAULTS[provider])))
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) and k for k in kinds):
        raise CallbackError("events (statuses for twilio) must be a non-empty list of names.")
    delay_ms = body.get("delay_ms") or 0
    if not isinstance(delay_ms, int) or delay_ms < 0:
        raise CallbackError("delay_ms must be a non-negative integer.")
    return {"provider": provider, "url": url, "events": kinds, "delay_ms": delay_ms}


async def _play_auto(store: Store, rule: dict[str, Any], messages: Sequence[Message], config: Any) -> None:
    await asyncio.sleep(rule["delay_ms"] / 1000)
    if rule["provider"] == "sendgrid":
        events = [{"event": kind, "sandbox_message_id": m.id} for m in messages for kind in rule["events"]]
        result = await play_sendgrid(store, url=rule["url"], events=events, seed=config.event_key_seed)
        log.info("auto callback sendgrid: %s", result.get("status") or result.get("error"))
        return
    for message in messages:
        for status in rule["events"]:
            body = {"message_sid": message.provider_message_id, "status": status}
            if rule["url"]:
                body["url"] = rule["url"]
            result = await play_twilio(
                store, body=body, account_sid=config.twilio_account_sid, auth_token=config.twilio_auth_token
            )
            log.info("auto callback twilio %s: %s", status, result.get("status") or result.get("error"))


def report_accepted(store: Store, provider: str, messages: Sequence[Message], config: Any) -> None:
    """Schedules the automatic callbacks for messages the provider just accepted, if configured."""
    rule = store.auto_callbacks.get(provider)
    if rule is None or not messages:
        return
    task = asyncio.get_running_loop().create_task(_play_auto(store, rule, list(messages), config))
    _running.add(task)
    task.add_done_callback(_running.discard)
