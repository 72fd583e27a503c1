"""Standard Webhooks signatures (https://www.standardwebhooks.com/), made by the `standardwebhooks` library.

A secret is `whsec_` + base64 of 24 to 64 random bytes. A message is signed as
`HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")` and sent as
`webhook-signature: v1,<base64>`; during a secret rotation both secrets sign, space-separated,
and a receiver accepts the message if any one matches.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from apps.core.errors import Unprocessable

SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)
SECRET_MIN_BYTES = 24
SECRET_MAX_BYTES = 64


class InvalidSecret(Unprocessable):
    code = "invalid_secret"


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_check(secret: str) -> str:
    """Returns the secret if it is `whsec_` + base64 of 24-64 bytes; raises `InvalidSecret`."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("A webhook secret starts with whsec_.", fields={"secret": ["Missing whsec_ prefix."]})
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("A webhook secret is whsec_ + base64.", fields={"secret": ["Not base64."]}) from exc
    if not SECRET_MIN_BYTES <= len(raw) <= SECRET_MAX_BYTES:
        raise InvalidSecret(
            f"A webhook secret holds {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes.",
            fields={"secret": [f"{len(raw)} bytes."]},
        )
    return secret


def signature(*, secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` value: one `v1,…` per secret, space-separated."""
    return " ".join(Webhook(s).sign(msg_id, timestamp, body) for s in secrets)


def signed_headers(*, secrets: Sequence[str], msg_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature(secrets=secrets, msg_id=msg_id, timestamp=now, body=body),
        "Content-Type": "application/json",
        "User-Agent": "Signalbox-Webhooks/1",
    }
