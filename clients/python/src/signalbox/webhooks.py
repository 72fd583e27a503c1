"""Verifying the webhooks Signalbox sends, per Standard Webhooks (https://www.standardwebhooks.com/).

Signalbox signs `"{webhook-id}.{webhook-timestamp}.{body}"` with HMAC-SHA256 under the endpoint's
`whsec_…` secret; during a rotation it sends one signature per secret and any one may match. The
check is the `standardwebhooks` library's (constant-time compare, 5-minute timestamp tolerance).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook
from standardwebhooks.webhooks import WebhookVerificationError as _LibraryError

from signalbox.errors import WebhookVerificationError


def verify(payload: str | bytes, headers: Mapping[str, str], secret: str) -> Any:
    """The parsed JSON body if the signature checks out; raises `WebhookVerificationError` otherwise.

    Pass the body exactly as received (bytes or text, before any JSON parsing) and the request's
    headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`; any case).
    """
    body = payload.decode() if isinstance(payload, bytes) else payload
    try:
        hook = Webhook(secret)
    except (EmptyWebhookSecretError, RuntimeError, ValueError) as exc:  # empty, or not whsec_ + base64
        raise WebhookVerificationError(str(exc) or "Invalid secret.", code="invalid_secret") from exc
    try:
        return hook.verify(body, dict(headers))
    except (_LibraryError, ValueError) as exc:  # ValueError: a malformed signature header
        raise WebhookVerificationError(str(exc) or "Invalid signature.", code="invalid_signature") from exc


class Webhooks:
    """`client.webhooks.verify(...)`: the same check, reachable from either client."""

    @staticmethod
    def verify(payload: str | bytes, headers: Mapping[str, str], secret: str) -> Any:
        return verify(payload, headers, secret)
