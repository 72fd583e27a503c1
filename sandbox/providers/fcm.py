"""FCM HTTP v1 `messages:send`, and the Google OAuth2 token endpoint it needs.

google-auth's service-account flow posts a signed JWT (the "JWT bearer" grant) to the
`token_uri` of the service-account file; `POST /token` checks the RS256 signature against
the public key registered for that account and issues an access token. `messages:send`
accepts only tokens issued here and answers `{"name": "projects/{p}/messages/{id}"}`, or a
Google error `{"error": {"code", "message", "status", "details": [FcmError]}}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sandbox.context import get_sandbox, header_idempotency_key, lookup_key, request_headers, retry_headers
from sandbox.faults import Fault
from sandbox.state import Message, Store

PROVIDER = "fcm"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3599
# Google accepts assertions up to an hour long, with a little clock skew.
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 300
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# FCM error code -> (HTTP status, Google status, message), as FCM documents them.
FCM_ERRORS: dict[str, tuple[int, str, str]] = {
    "UNSPECIFIED_ERROR": (400, "INVALID_ARGUMENT", "No more information is available about this error."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}
STATUS_TO_FCM = {status: code for code, (status, _, _) in reversed(FCM_ERRORS.items())}
UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def google_error(
    status: int,
    google_status: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status, headers=headers)


def fcm_error(code: str, *, message: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    status, google_status, default_message = FCM_ERRORS[code]
    return google_error(
        status,
        google_status,
        message or default_message,
        details=[{"@type": FCM_ERROR_TYPE, "errorCode": code}],
        headers=headers,
    )


def fault_response(fault: Fault) -> web.Response:
    headers = retry_headers(fault)
    if fault.status == "ACCESS_TOKEN_EXPIRED":
        # What pyfcm and google-auth look for to refresh the token and retry.
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_EXPIRED",
                "domain": "googleapis.com",
                "metadata": {
                    "service": "fcm.googleapis.com",
                    "method": "google.firebase.fcm.v1.FcmService.SendMessage",
                },
            }
        ]
        return google_error(401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE, details=details, headers=headers)
    if isinstance(fault.status, str) and fault.status in FCM_ERRORS:
        return fcm_error(fault.status, headers=headers)
    if isinstance(fault.status, int) and fault.status in STATUS_TO_FCM:
        return fcm_error(STATUS_TO_FCM[fault.status], headers=headers)
    status = fault.status if isinstance(fault.status, int) else 400
    return google_error(status, "UNKNOWN", f"Sandbox fault {fault.status}", headers=headers)


# -- OAuth2 token endpoint ---------------------------------------------------------------


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_assertion(store: Store, assertion: str) -> tuple[dict[str, Any] | None, str]:
    """The JWT's claims if its RS256 signature and times check out, else (None, Google's reason)."""
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header = json.loads(_b64url(header_b64))
        claims = json.loads(_b64url(claims_b64))
        signature = _b64url(signature_b64)
    except (ValueError, binascii.Error):
        return None, "Invalid JWT: the assertion is not a well-formed JWT."
    if header.get("alg") != "RS256":
        return None, "Invalid JWT: only RS256 is supported."
    public_pem = store.service_account_keys.get(str(claims.get("iss")))
    if public_pem is None:
        return None, "Invalid grant: account not found"
    public_key = serialization.load_pem_public_key(public_pem)
    assert isinstance(public_key, rsa.RSAPublicKey)
    try:
        public_key.verify(signature, f"{header_b64}.{claims_b64}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return None, "Invalid JWT Signature."
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (
        not isinstance(iat, (int, float))
        or not isinstance(exp, (int, float))
        or exp - iat > MAX_ASSERTION_LIFETIME
        or iat > now + CLOCK_SKEW
        or exp < now - CLOCK_SKEW
    ):
        return None, (
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
            "Check your iat and exp values in the JWT claim."
        )
    if not str(claims.get("aud", "")).endswith("/token"):
        return None, "Invalid JWT: Failed audience check."
    return claims, ""


async def token(request: web.Request) -> web.Response:
    store = get_sandbox(request).store
    form = await request.post()
    grant_type = str(form.get("grant_type", ""))
    if grant_type != JWT_BEARER_GRANT:
        return web.json_response(
            {"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {grant_type}"},
            status=400,
        )
    claims, reason = verify_assertion(store, str(form.get("assertion", "")))
    if claims is None:
        return web.json_response({"error": "invalid_grant", "error_description": reason}, status=400)
    if not claims.get("scope"):
        return web.json_response(
            {"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."},
            status=400,
        )
    access_token = "ya29.c." + secrets.token_urlsafe(48)
    store.access_tokens[access_token] = str(claims["iss"])
    return web.json_response(
        {"access_token": access_token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"},
        headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate", "Pragma": "no-cache"},
    )


# -- messages:send -----------------------------------------------------------------------


def _target(message: dict[str, Any]) -> list[str]:
    return [str(message[k]) for k in ("token", "topic", "condition") if message.get(k)]


def validation_error(body: Any) -> web.Response | None:
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        return fcm_error("INVALID_ARGUMENT")
    message = body["message"]
    targets = _target(message)
    if not targets:
        return fcm_error("INVALID_ARGUMENT", message="Recipient of the message is not set.")
    if len(targets) > 1:
        return fcm_error(
            "INVALID_ARGUMENT", message="Request contains more than one recipient (token/topic/condition)."
        )
    data = message.get("data")
    if data is not None:
        if not isinstance(data, dict):
            return fcm_error("INVALID_ARGUMENT", message="Invalid value at 'message.data'.")
        for index, (name, value) in enumerate(data.items()):
            if not isinstance(value, str):
                return google_error(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid value at 'message.data[{index}].value' (TYPE_STRING), {json.dumps(value)}",
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.BadRequest",
                            "fieldViolations": [
                                {
                                    "field": f"message.data[{index}].value",
                                    "description": f"Invalid value for '{name}': data values must be strings.",
                                }
                            ],
                        }
                    ],
                )
    return None


async def send(request: web.Request) -> web.Response:
    store = get_sandbox(request).store
    project = request.match_info["project"]
    header_key = header_idempotency_key(request)
    authorization = request.headers.get("Authorization", "")
    if authorization.removeprefix("Bearer ").strip() not in store.access_tokens:
        store.attempt(PROVIDER, 401, [], idempotency_key=header_key)
        return google_error(401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE)

    try:
        body = json.loads(await request.read())
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    recipients = _target(message) if isinstance(message, dict) else []
    key = lookup_key(message.get("data") if isinstance(message, dict) else None, ("idempotency_key",)) or header_key

    fault = store.take_fault(PROVIDER, recipients)
    if fault is not None and fault.status is not None:
        await fault.wait()
        response = fault_response(fault)
        store.attempt(PROVIDER, response.status, recipients, idempotency_key=key, fault=fault)
        return response

    invalid = validation_error(body)
    if invalid is not None:
        store.attempt(PROVIDER, invalid.status, recipients, idempotency_key=key, fault=fault)
        return invalid
    assert isinstance(body, dict) and isinstance(message, dict)

    if body.get("validate_only"):
        store.attempt(PROVIDER, 200, recipients, idempotency_key=key, fault=fault)
        return web.json_response({"name": f"projects/{project}/messages/fake_message_id"})

    name = f"projects/{project}/messages/0:{int(time.time() * 1000)}%{secrets.token_hex(8)}"
    notification = message.get("notification") or {}
    store.record(
        Message(
            provider=PROVIDER,
            recipient=recipients[0],
            provider_message_id=name,
            subject=notification.get("title"),
            text=notification.get("body"),
            headers=request_headers(request),
            idempotency_key=key,
            extra={
                "project": project,
                "target": next(k for k in ("token", "topic", "condition") if message.get(k)),
                "image": notification.get("image"),
                "data": message.get("data") or {},
                "android": message.get("android"),
                "apns": message.get("apns"),
                "webpush": message.get("webpush"),
                "fcm_options": message.get("fcm_options"),
            },
        )
    )
    store.attempt(PROVIDER, 200, recipients, idempotency_key=key, fault=fault)
    if fault is not None:
        await fault.wait()
    return web.json_response({"name": name})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/token", token)
    app.router.add_post("/v1/projects/{project}/messages:send", send)
