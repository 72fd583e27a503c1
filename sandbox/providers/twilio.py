"""Twilio Programmable Messaging: create and fetch a Message.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` takes the form fields the SDK sends
(To, From or MessagingServiceSid, Body, MediaUrl, StatusCallback), checks basic auth
(account SID + auth token), and answers 201 with Twilio's message resource (`SM…` SID,
status `queued`, or `accepted` when sent through a Messaging Service). Errors use Twilio's
shape `{"code", "message", "more_info", "status"}`, which the SDK turns into a
`TwilioRestException` with the same code.
"""

from __future__ import annotations

import math
import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import BasicAuth, web

from sandbox.callbacks import report_accepted
from sandbox.context import get_sandbox, request_headers, retry_headers
from sandbox.faults import Fault
from sandbox.state import Message

PROVIDER = "twilio"
API_VERSION = "2010-04-01"
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
MAX_BODY = 1600
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€"
)

# Twilio error codes a fault may name, with the HTTP status and message Twilio uses.
ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {uri} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "Internal Server Error"),
    20503: (503, "Service Unavailable"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21408: (
        400,
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
    ),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21606: (
        400,
        "The 'From' phone number provided ({from_}) is not a valid message-capable Twilio phone number "
        "for this destination/account.",
    ),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21612: (
        400,
        "The 'To' phone number: {to}, is not currently reachable using the 'From' phone number: {from_} via SMS.",
    ),
    21614: (400, "'To' number {to} is not a valid mobile number"),
    21617: (400, "The concatenated message body exceeds the 1600 character limit."),
    30001: (400, "Queue overflow"),
}
# The error code Twilio pairs with a plain HTTP status.
STATUS_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}


def error_response(
    code: int, *, status: int | None = None, headers: dict[str, str] | None = None, **fmt: str
) -> web.Response:
    known_status, template = ERRORS.get(code, (status or 400, f"Error {code}"))
    message = template.format(**{"to": "", "from_": "", "uri": "", **fmt})
    http_status = status or known_status
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": http_status,
    }
    if code == 20003:
        body["detail"] = "Your AccountSid or AuthToken was incorrect."
    return web.json_response(body, status=http_status, headers=headers)


def fault_response(fault: Fault, *, to: str, from_: str, uri: str) -> web.Response:
    headers = retry_headers(fault)
    if isinstance(fault.status, int) and fault.status >= 1000:
        return error_response(fault.status, headers=headers, to=to, from_=from_, uri=uri)
    status = fault.status if isinstance(fault.status, int) else 400
    return error_response(STATUS_CODES.get(status, status), status=status, headers=headers, uri=uri)


def num_segments(body: str) -> int:
    if not body:
        return 1
    single, multi = (160, 153) if set(body) <= _GSM7 else (70, 67)
    return 1 if len(body) <= single else math.ceil(len(body) / multi)


def valid_address(address: str) -> bool:
    """E.164, or a channel address such as `whatsapp:+14155550100`."""
    channel, _, number = address.rpartition(":")
    if channel and channel not in ("whatsapp", "messenger", "rcs"):
        return False
    return bool(_E164.match(number)) if channel in ("", "whatsapp") else bool(number)


def authenticated(request: web.Request, account_sid: str) -> bool:
    config = get_sandbox(request).config
    try:
        auth = BasicAuth.decode(request.headers.get("Authorization", ""))
    except ValueError:
        return False
    return (
        auth.login == config.twilio_account_sid
        and auth.password == config.twilio_auth_token
        and account_sid == config.twilio_account_sid
    )


def message_resource(*, account_sid: str, sid: str, form: dict[str, Any], media: list[str]) -> dict[str, Any]:
    now = format_datetime(datetime.now(UTC))
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
    body = form.get("Body", "")
    service_sid = form.get("MessagingServiceSid")
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From"),
        "messaging_service_sid": service_sid,
        "num_media": str(len(media)),
        "num_segments": str(num_segments(body)),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        # With a Messaging Service Twilio picks the sender later, so it answers "accepted".
        "status": "accepted" if service_sid and not form.get("From") else "queued",
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": form.get("To"),
        "uri": uri,
    }


async def create_message(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    store = sandbox.store
    account_sid = request.match_info["account_sid"]
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not authenticated(request, account_sid):
        store.attempt(PROVIDER, 401, [], idempotency_key=key)
        return error_response(20003)

    post = await request.post()
    form = {name: str(value) for name, value in post.items()}
    media = [str(v) for v in post.getall("MediaUrl", [])]
    to, from_ = form.get("To", ""), form.get("From", "")
    uri = request.path

    fault = store.take_fault(PROVIDER, [to])
    if fault is not None and fault.status is not None:
        await fault.wait()
        response = fault_response(fault, to=to, from_=from_, uri=uri)
        store.attempt(PROVIDER, response.status, [to], idempotency_key=key, fault=fault)
        return response

    code = validation_error(form, media)
    if code is not None:
        store.attempt(PROVIDER, code, [to], idempotency_key=key, fault=fault)
        return error_response(code, to=to, from_=from_)

    sid = "SM" + secrets.token_hex(16)
    resource = message_resource(account_sid=account_sid, sid=sid, form=form, media=media)
    recorded = store.record(
        Message(
            provider=PROVIDER,
            recipient=to,
            provider_message_id=sid,
            sender=from_ or form.get("MessagingServiceSid"),
            text=form.get("Body"),
            headers=request_headers(request),
            idempotency_key=key,
            extra={
                "form": form,
                "media_urls": media,
                "status_callback": form.get("StatusCallback"),
                "resource": resource,
            },
        )
    )
    store.attempt(PROVIDER, 201, [to], idempotency_key=key, fault=fault)
    # Reported even when the answer then hangs (a fault), as Twilio would: it has the message.
    report_accepted(store, PROVIDER, [recorded], sandbox.config)
    if fault is not None:
        await fault.wait()
    return web.json_response(resource, status=201)


def validation_error(form: dict[str, str], media: list[str]) -> int | None:
    """The Twilio error code for the first problem Twilio would report, if any."""
    if not form.get("To"):
        return 21604
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603
    if not form.get("Body") and not media and not form.get("ContentSid"):
        return 21602
    if not valid_address(form["To"]):
        return 21211
    if form.get("From") and not (valid_address(form["From"]) or form["From"].isalnum()):
        return 21606
    if len(form.get("Body", "")) > MAX_BODY:
        return 21617
    return None


async def fetch_message(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    account_sid = request.match_info["account_sid"]
    if not authenticated(request, account_sid):
        return error_response(20003)
    message = sandbox.store.find_message(request.match_info["sid"])
    if message is None or message.provider != PROVIDER:
        return error_response(20404, uri=request.path)
    return web.json_response(message.extra["resource"])


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", create_message)
    app.router.add_get(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages/{{sid}}.json", fetch_message)
