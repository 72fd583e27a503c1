"""Twilio's message status callbacks: `POST /callbacks/twilio/status?delivery=<id>` (outside /api/v1,
no API key: the `X-Twilio-Signature` is the credential; the view is apps/notifications/public.py).

The Twilio adapter (apps/providers/adapters/twilio.py) asks for them on every message it sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from twilio.request_validator import RequestValidator

from apps.core.crypto import DecryptionFailed
from apps.notifications.models import Delivery
from apps.notifications.services.callbacks import delivery_report
from apps.notifications.services.suppressions import TWILIO_CALLBACK_CODES, suppression_add
from apps.providers.base import Channel
from apps.providers.models import ProviderConfig

# Twilio's final message statuses, and the delivery status each one moves a `sent` delivery to.
# `sent` and earlier: Twilio has the message (settles an `unknown` send whose answer was lost).
TWILIO_FINAL_STATUSES = {
    "accepted": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "failed",
    "failed": "failed",
}


def _twilio_auth_tokens(*, tenant_id: Any, account_sid: str) -> list[str]:
    """The auth tokens that may have signed a callback for this account: the tenant's, then the environment's."""
    tokens = []
    for row in ProviderConfig.objects.filter(tenant_id=tenant_id, provider="twilio"):
        if row.options.get("account_sid") == account_sid:
            with suppress(DecryptionFailed):
                tokens.append(str(row.secrets().get("auth_token") or ""))
    if account_sid == settings.TWILIO_ACCOUNT_SID:
        tokens.append(settings.TWILIO_AUTH_TOKEN)
    return [token for token in tokens if token]


def twilio_status_record(
    *, url: str, params: Mapping[str, str], signature: str, delivery_id: str, now: datetime | None = None
) -> bool:
    """Moves an SMS delivery forward to `delivered` or `failed` from Twilio's signed status callback.

    Returns False when the signature does not verify (nothing changes). Statuses only move
    forward (`apps.notifications.services.callbacks`): a callback that arrives late or twice
    finds nothing to change. An error code that condemns the number (STOP, invalid, landline,
    blocked) puts it on the tenant's suppression list.
    """
    try:
        delivery = Delivery.objects.filter(pk=delivery_id, channel=Channel.SMS).first()
    except (ValueError, DjangoValidationError):
        delivery = None
    account_sid = str(params.get("AccountSid", ""))
    tokens = _twilio_auth_tokens(tenant_id=delivery.tenant_id if delivery else None, account_sid=account_sid)
    if not any(RequestValidator(token).validate(url, dict(params), signature) for token in tokens):
        return False
    status = TWILIO_FINAL_STATUSES.get(str(params.get("MessageStatus", "")))
    message_sid = str(params.get("MessageSid", ""))
    if delivery is None or status is None:
        return True
    if delivery.provider_message_id and delivery.provider_message_id != message_sid:
        return True  # about a message of an earlier attempt, not the one this delivery settled on
    now = now or timezone.now()
    if status in ("sent", "delivered"):
        delivery_report(
            delivery_id=delivery.pk, status=status, provider="twilio", provider_message_id=message_sid, at=now
        )
        return True
    code = str(params.get("ErrorCode") or params.get("MessageStatus"))
    delivery_report(
        delivery_id=delivery.pk,
        status="failed",
        provider="twilio",
        provider_message_id=message_sid,
        error_code=code,
        detail=f"Twilio reported the message {params.get('MessageStatus')} ({code}).",
        at=now,
    )
    reason = TWILIO_CALLBACK_CODES.get(code)
    if reason:
        suppression_add(
            tenant_id=delivery.tenant_id,
            channel=Channel.SMS,
            address=params.get("To") or "",
            reason=reason,
            source=f"twilio:{code}",
            detail=f"Twilio status callback: {params.get('MessageStatus')} ({code}).",
            delivery_id=delivery.pk,
        )
    return True
