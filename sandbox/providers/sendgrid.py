"""SendGrid v3 Mail Send: `POST /v3/mail/send`.

Answers like SendGrid: 202 with an empty body and `X-Message-Id`; 400 with
`{"errors": [{"message", "field", "help"}]}` listing every problem found; 401 for a missing
or wrong API key; 429 with the `X-RateLimit-*` headers. One message is recorded per
"to" address of each personalization, since that is what a bulk send fans out to, as its
recipient receives it: the personalization's `substitutions` applied to the subject, the content
and the reply-to (as SendGrid does), so tests read each recipient's final text.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from aiohttp import web

from sandbox.callbacks import report_accepted
from sandbox.context import get_sandbox, header_idempotency_key, lookup_key, request_headers, retry_headers
from sandbox.faults import Fault
from sandbox.state import Message

PROVIDER = "sendgrid"
MAX_PERSONALIZATIONS = 1000
IDEMPOTENCY_FIELDS = ("idempotency_key", "Idempotency-Key", "X-Idempotency-Key")
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

_STATUS_MESSAGES = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    404: "not found",
    413: "The JSON payload you have included in your request is too large.",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}


def error(message: str, field: str | None = None, help_anchor: str | None = None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": f"{_HELP}#{help_anchor}" if help_anchor else None}


def error_response(status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errors": errors}, status=status, headers=headers)


def fault_response(fault: Fault) -> web.Response:
    status = fault.status if isinstance(fault.status, int) else 400
    message = _STATUS_MESSAGES.get(status, str(fault.status))
    headers = retry_headers(fault)
    if status == 429:
        reset_in = fault.retry_after if fault.retry_after is not None else 1
        headers.update(
            {
                "X-RateLimit-Limit": "600",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + reset_in),
            }
        )
    return error_response(status, [error(message)], headers)


def validate(body: Any) -> list[dict[str, Any]]:
    """The checks SendGrid runs before accepting a send, with its wording."""
    if not isinstance(body, dict):
        return [error("Bad Request")]
    errors: list[dict[str, Any]] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        errors.append(
            error(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
                "-Personalizations-Errors",
            )
        )
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            error(
                f"The personalizations field must have no more than {MAX_PERSONALIZATIONS} personalizations.",
                "personalizations",
                "-Personalizations-Errors",
            )
        )
    for i, personalization in enumerate(personalizations):
        errors.extend(_validate_personalization(i, personalization))

    sender = body.get("from")
    if not isinstance(sender, dict) or not sender.get("email"):
        errors.append(
            error(
                "The from object must be provided for every email send. It is an object that requires "
                'the email parameter, but may also contain a name parameter.  e.g. {"email" : '
                '"example@example.com"}  or {"email" : "example@example.com", "name" : "Example Recipient"}.',
                "from.email",
                "message.from",
            )
        )
    elif not _EMAIL.match(str(sender["email"])):
        errors.append(error("The from email does not contain a valid address.", "from.email", "message.from"))

    has_template = bool(body.get("template_id"))
    every_personalization_has_subject = bool(personalizations) and all(
        isinstance(p, dict) and p.get("subject") for p in personalizations
    )
    if not has_template and not body.get("subject") and not every_personalization_has_subject:
        errors.append(
            error(
                "The subject is required. You can get around this requirement if you use a template with a "
                "subject defined or if every personalization has a subject defined.",
                "subject",
                "message.subject",
            )
        )
    content = body.get("content")
    if not has_template and (not isinstance(content, list) or not content):
        errors.append(
            error(
                "Unless a valid template_id is provided, the content parameter is required. There must be at "
                "least one defined content block. We typically suggest both text/plain and text/html blocks "
                "are included, but only one block is required.",
                "content",
                "message.content",
            )
        )
    elif isinstance(content, list):
        for i, block in enumerate(content):
            if not isinstance(block, dict) or not block.get("type"):
                errors.append(error("The content type must be provided.", f"content.{i}.type", "message.content.type"))
            elif not isinstance(block.get("value"), str) or not block["value"]:
                errors.append(
                    error(
                        "The content value must be a string at least one character in length.",
                        f"content.{i}.value",
                        "message.content.value",
                    )
                )
    return errors


def _validate_personalization(index: int, personalization: Any) -> list[dict[str, Any]]:
    prefix = f"personalizations.{index}"
    if not isinstance(personalization, dict):
        return [error("Bad Request", prefix)]
    errors: list[dict[str, Any]] = []
    to = personalization.get("to")
    if not isinstance(to, list) or not to:
        errors.append(
            error(
                "The to array is required for all personalization objects, and must have at least one email "
                "object with a valid email address.",
                f"{prefix}.to",
                "message.personalizations.to",
            )
        )
        to = []
    seen: set[str] = set()
    for kind in ("to", "cc", "bcc"):
        addresses = to if kind == "to" else personalization.get(kind) or []
        if not isinstance(addresses, list):
            errors.append(error("Bad Request", f"{prefix}.{kind}"))
            continue
        for j, address in enumerate(addresses):
            email = address.get("email") if isinstance(address, dict) else None
            if not isinstance(email, str) or not _EMAIL.match(email):
                errors.append(
                    error(
                        "Does not contain a valid address.",
                        f"{prefix}.{kind}.{j}.email",
                        "message.personalizations.to",
                    )
                )
                continue
            if email.lower() in seen:
                errors.append(
                    error(
                        "Each email address in the personalization block should be unique between to, cc, and "
                        f"bcc. We found the first duplicate instance of [{email}] in the {prefix}.{kind} field.",
                        f"{prefix}.{kind}",
                        "message.recipient.duplicate",
                    )
                )
            seen.add(email.lower())
    return errors


def _content(body: dict[str, Any], content_type: str) -> str | None:
    for block in body.get("content") or []:
        if isinstance(block, dict) and block.get("type") == content_type:
            return str(block.get("value"))
    return None


def substitute(text: str | None, substitutions: Any) -> str | None:
    """Each substitution tag replaced by its value, in one pass (a value is never substituted again)."""
    if not text or not isinstance(substitutions, dict) or not substitutions:
        return text
    tags = sorted((str(k) for k in substitutions), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(tag) for tag in tags))
    return pattern.sub(lambda match: str(substitutions[match.group(0)]), text)


def expand(body: dict[str, Any], request_key: str | None, message_id: str) -> list[Message]:
    """One message per personalization "to"; personalization fields override the message's."""
    sender = body["from"]
    messages: list[Message] = []
    for index, personalization in enumerate(body["personalizations"]):
        headers = {**(body.get("headers") or {}), **(personalization.get("headers") or {})}
        custom_args = {**(body.get("custom_args") or {}), **(personalization.get("custom_args") or {})}
        key = (
            lookup_key(personalization.get("custom_args"), IDEMPOTENCY_FIELDS)
            or lookup_key(personalization.get("headers"), IDEMPOTENCY_FIELDS)
            or lookup_key(body.get("custom_args"), IDEMPOTENCY_FIELDS)
            or lookup_key(body.get("headers"), IDEMPOTENCY_FIELDS)
            or request_key
        )
        substitutions = personalization.get("substitutions")
        subject = substitute(personalization.get("subject") or body.get("subject"), substitutions)
        text = substitute(_content(body, "text/plain"), substitutions)
        html = substitute(_content(body, "text/html"), substitutions)
        reply_to = substitute((body.get("reply_to") or {}).get("email"), substitutions)
        for address in personalization["to"]:
            messages.append(
                Message(
                    provider=PROVIDER,
                    recipient=address["email"],
                    provider_message_id=message_id,
                    sender=sender["email"],
                    subject=subject,
                    text=text,
                    html=html,
                    headers={str(k): str(v) for k, v in headers.items()},
                    idempotency_key=key,
                    extra={
                        "personalization_index": index,
                        "to_name": address.get("name"),
                        "from_name": sender.get("name"),
                        "reply_to": reply_to,
                        "cc": [a.get("email") for a in personalization.get("cc") or []],
                        "bcc": [a.get("email") for a in personalization.get("bcc") or []],
                        "custom_args": custom_args,
                        "categories": body.get("categories") or [],
                        "template_id": body.get("template_id"),
                        "dynamic_template_data": personalization.get("dynamic_template_data"),
                        "send_at": personalization.get("send_at") or body.get("send_at"),
                        "asm": body.get("asm"),
                        "sg_message_id": f"{message_id}.sandbox.{len(messages)}",
                    },
                )
            )
    return messages


def _recipients(body: Any) -> list[str]:
    if not isinstance(body, dict) or not isinstance(body.get("personalizations"), list):
        return []
    return [
        address["email"]
        for p in body["personalizations"]
        if isinstance(p, dict) and isinstance(p.get("to"), list)
        for address in p["to"]
        if isinstance(address, dict) and isinstance(address.get("email"), str)
    ]


async def mail_send(request: web.Request) -> web.Response:
    sandbox = get_sandbox(request)
    store = sandbox.store
    request_key = header_idempotency_key(request)
    authorization = request.headers.get("Authorization", "")
    if not authorization.startswith("Bearer "):
        store.attempt(PROVIDER, 401, [], idempotency_key=request_key)
        return error_response(401, [error("authorization required")])
    if authorization.removeprefix("Bearer ").strip() != sandbox.config.sendgrid_api_key:
        store.attempt(PROVIDER, 401, [], idempotency_key=request_key)
        return error_response(401, [error(_STATUS_MESSAGES[401])])

    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    recipients = _recipients(body)

    fault = store.take_fault(PROVIDER, recipients)
    if fault is not None and fault.status is not None:
        await fault.wait()
        response = fault_response(fault)
        store.attempt(PROVIDER, response.status, recipients, idempotency_key=request_key, fault=fault)
        return response

    errors = validate(body)
    if errors:
        store.attempt(PROVIDER, 400, recipients, idempotency_key=request_key, fault=fault)
        return error_response(400, errors)

    message_id = secrets.token_urlsafe(16)[:22]
    accepted = expand(body, request_key, message_id)
    for message in accepted:
        message.extra["request_headers"] = request_headers(request)
        store.record(message)
    store.attempt(PROVIDER, 202, recipients, idempotency_key=request_key, fault=fault)
    # Reported even when the answer then hangs (a fault), as SendGrid would: it has the message.
    report_accepted(store, PROVIDER, accepted, sandbox.config)
    if fault is not None:
        await fault.wait()
    return web.Response(status=202, headers={"X-Message-Id": message_id})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v3/mail/send", mail_send)
