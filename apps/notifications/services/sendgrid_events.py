"""SendGrid's Event Webhook: `POST /callbacks/sendgrid/events` (outside /api/v1, no API key; the
view is `apps/notifications/public.py`).

SendGrid posts a JSON array of events, signed with ECDSA (P-256, SHA-256) over the timestamp
header followed by the raw body. A request is accepted only when:

1. the signature verifies (`sendgrid.helpers.eventwebhook.EventWebhook`) with the environment's
   key (`SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY`, which vouches for any tenant) or with the key of a
   tenant named in the events (the `event_webhook_public_key` option of that tenant's SendGrid
   provider config, which vouches for that tenant's events only);
2. its timestamp is within `SIGNALBOX_CALLBACK_MAX_AGE_SECONDS` of now (a captured request
   cannot be replayed later).

Forged or stale: 403, nothing changes. The signature is checked on the raw body before it is
parsed where it can be (the environment's key); the body is parsed under the API's input limits
(`apps/core/parsers.py`: depth, NUL, surrogates, size), and a signed body that breaks them answers
400 with their code. Otherwise each event that matters is applied once: its
`sg_event_id` is inserted into `ProviderEvent` (unique) in the same transaction, so SendGrid's
retries and duplicates find it and change nothing. Events name their delivery by the
`idempotency_key` custom arg the SendGrid adapter sets on every personalization.

| event | delivery | suppression list |
|---|---|---|
| `processed`, `deferred` | → `sent` when earlier (SendGrid has it: settles an `unknown` send whose answer was lost) | |
| `delivered` | → `delivered` | |
| `bounce` (type `bounce`) | → `bounced` | `hard_bounce` |
| `bounce` (type `blocked`) | → `failed` (`blocked`) | |
| `dropped` | → `failed` (`dropped`) | if dropped for a bounced, invalid, spam-reporting or unsubscribed address |
| `spamreport` | unchanged | `spam_report` |
| `unsubscribe`, `group_unsubscribe` | unchanged | `unsubscribed` |

Other events (`open`, `click`) are acknowledged and ignored: opens and clicks are counted by
Signalbox's own tracking links.
"""

from __future__ import annotations

import binascii
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from rest_framework.exceptions import ParseError
from sendgrid.helpers.eventwebhook import EventWebhook

from apps.core import parsers
from apps.core.errors import ApplicationError
from apps.notifications import conf
from apps.notifications.models import Delivery, Suppression
from apps.notifications.services.callbacks import delivery_report, earlier_than
from apps.notifications.services.suppressions import suppression_add
from apps.observability import metrics
from apps.providers.models import ProviderConfig, ProviderEvent

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
PROVIDER = "sendgrid"
# Why SendGrid dropped a message, when the reason condemns the address.
_DROPPED_REASONS = {
    "bounced address": Suppression.Reason.HARD_BOUNCE,
    "invalid": Suppression.Reason.INVALID_ADDRESS,
    "spam reporting address": Suppression.Reason.SPAM_REPORT,
    "unsubscribed address": Suppression.Reason.UNSUBSCRIBED,
}
ACTIONABLE = frozenset({"delivered", "bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"})
# SendGrid has the message: these settle a send whose answer was lost (`unknown`) as `sent`. The
# report moves a delivery forward only, so they need no dedup row; they count as applied when
# they moved one, else as ignored.
ACCEPTED = frozenset({"processed", "deferred"})


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0


def _max_age() -> float:
    return float(conf.wiring().callback_max_age_seconds)


def _verifies(public_key: str, payload: str, signature: str, timestamp: str) -> bool:
    try:
        return bool(EventWebhook(public_key).verify_signature(payload, signature, timestamp))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm):
        return False


def _tenant_keys(tenant_ids: set[str]) -> dict[str, list[str]]:
    """tenant id -> the Event Webhook keys of its SendGrid configs (ids that are not UUIDs match nothing)."""
    valid = set()
    for value in tenant_ids:
        with suppress(ValueError):
            valid.add(str(uuid.UUID(value)))
    keys: dict[str, list[str]] = {}
    for row in ProviderConfig.objects.filter(tenant_id__in=valid, provider=PROVIDER, enabled=True):
        key = str((row.options or {}).get("event_webhook_public_key") or "")
        if key:
            keys.setdefault(str(row.tenant_id), []).append(key)
    return keys


def _parsed(payload: str) -> list[dict[str, Any]]:
    """The events of a body, parsed under the API's input limits (`apps/core/parsers.py`)."""
    try:
        events = parsers.loads(payload)
    except ApplicationError as refused:  # too deep, NUL or surrogate, NaN
        raise Refused(400, refused.code, refused.message) from None
    except ParseError:
        events = None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise Refused(400, "invalid_payload", "Expected a JSON array of events.")
    return events


def verified_events(*, body: bytes, signature: str, timestamp: str, now: float | None = None) -> list[dict[str, Any]]:
    """The events of an authentic, fresh request, each trusted for its tenant; raises Refused.

    The environment's key is tried on the raw body before anything parses it. Only a tenant's key
    needs the body parsed first (the events name their tenants), and then under the bounded parser,
    so an anonymous body can cost no more than a bounded parse; anything it fails on is a forgery.
    """
    if not signature or not timestamp:
        raise Refused(403, "signature_missing", "The signature headers are missing.")
    try:
        age = abs((now if now is not None else time.time()) - float(timestamp))
    except ValueError:
        raise Refused(403, "signature_invalid", "The timestamp is not a number.") from None
    if age > _max_age():
        raise Refused(403, "signature_stale", "The request is too old (or from the future); it may be a replay.")
    forged = Refused(403, "signature_invalid", "The signature does not verify.")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        raise forged from None
    environment_key = conf.wiring().sendgrid_event_public_key
    if environment_key and _verifies(environment_key, payload, signature, timestamp):
        return _parsed(payload)
    try:
        events = _parsed(payload)
    except Refused:
        raise forged from None
    named = {str(e.get("tenant_id")) for e in events if e.get("tenant_id")}
    for tenant_id, keys in _tenant_keys(named).items():
        if any(_verifies(key, payload, signature, timestamp) for key in keys):
            # A tenant's key vouches for that tenant's events only.
            return [e for e in events if str(e.get("tenant_id")) == tenant_id]
    raise forged


def _event_time(event: Mapping[str, Any]) -> datetime:
    with suppress(TypeError, ValueError, OverflowError):
        return datetime.fromtimestamp(float(event["timestamp"]), tz=UTC)
    return datetime.now(tz=UTC)


def _first_seen(events: Sequence[Mapping[str, Any]], now: datetime) -> set[str]:
    """Inserts the events' ids into the dedup table; returns the ids that were not there yet."""
    if not events:
        return set()
    table = ProviderEvent._meta.db_table
    values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(events))
    params: list[Any] = []
    for event in events:
        params += [PROVIDER, str(event["sg_event_id"])[:128], str(event.get("event", ""))[:32], None, now]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (provider, event_id, kind, delivery_id, received_at) VALUES {values} "  # noqa: S608
            "ON CONFLICT (provider, event_id) DO NOTHING RETURNING event_id",
            params,
        )
        return {row[0] for row in cursor.fetchall()}


def _apply(event: Mapping[str, Any]) -> bool:
    """Applies one event; False when it names no delivery of its tenant (nothing changes)."""
    kind = str(event.get("event"))
    delivery_id = str(event.get("idempotency_key") or "")
    delivery = None
    if delivery_id:
        with suppress(ValueError, ValidationError):
            delivery = (
                Delivery.objects.filter(pk=delivery_id, channel="email")
                .values("id", "tenant_id", "recipient_id")
                .first()
            )
    if delivery is None or (event.get("tenant_id") and str(event["tenant_id"]) != str(delivery["tenant_id"])):
        log.info("sendgrid event for no known delivery", extra={"event": kind})
        return False
    at = _event_time(event)
    reason_text = str(event.get("reason") or event.get("response") or "")
    message_id = str(event.get("sg_message_id") or "")
    tenant_id = delivery["tenant_id"]
    suppression = None
    if kind == "delivered":
        delivery_report(
            delivery_id=delivery_id, status="delivered", provider=PROVIDER, provider_message_id=message_id, at=at
        )
    elif kind == "bounce":
        blocked = str(event.get("type") or "bounce") == "blocked"
        delivery_report(
            delivery_id=delivery_id,
            status="failed" if blocked else "bounced",
            provider=PROVIDER,
            provider_message_id=message_id,
            error_code="blocked" if blocked else "bounce",
            detail=reason_text,
            at=at,
        )
        suppression = None if blocked else Suppression.Reason.HARD_BOUNCE
    elif kind == "dropped":
        delivery_report(
            delivery_id=delivery_id,
            status="failed",
            provider=PROVIDER,
            provider_message_id=message_id,
            error_code="dropped",
            detail=reason_text,
            at=at,
        )
        lowered = reason_text.lower()
        suppression = next((r for text, r in _DROPPED_REASONS.items() if text in lowered), None)
    elif kind == "spamreport":
        suppression = Suppression.Reason.SPAM_REPORT
    elif kind in ("unsubscribe", "group_unsubscribe"):
        suppression = Suppression.Reason.UNSUBSCRIBED
    if suppression and event.get("email"):
        suppression_add(
            tenant_id=tenant_id,
            channel="email",
            address=event["email"],
            reason=suppression,
            source=f"sendgrid:{kind}",
            detail=reason_text,
            delivery_id=delivery_id,
        )
    return True


def _unsettled(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ACCEPTED events (`processed`, `deferred`: one for nearly every message) whose delivery is
    still earlier than `sent`, found in one query: almost always none, as the send recorded it."""
    accepted: dict[uuid.UUID, dict[str, Any]] = {}
    for event in events:  # the first event naming a delivery settles it, as before
        if event.get("event") in ACCEPTED and event.get("idempotency_key"):
            with suppress(ValueError):  # not one of our delivery ids
                accepted.setdefault(uuid.UUID(str(event["idempotency_key"])), event)
    pending = Delivery.objects.filter(pk__in=list(accepted), status__in=earlier_than("sent"))
    return [accepted[pk] for pk in pending.values_list("pk", flat=True)]


def _settle_accepted(event: Mapping[str, Any]) -> bool:
    """Moves the delivery an ACCEPTED event names to `sent`, if it was earlier; True if it did."""
    delivery_id = str(event.get("idempotency_key") or "")
    if not delivery_id:
        return False
    return delivery_report(
        delivery_id=delivery_id,
        status="sent",
        provider=PROVIDER,
        provider_message_id=str(event.get("sg_message_id") or ""),
        at=_event_time(event),
        tenant_id=event.get("tenant_id") or None,
    )


def sendgrid_events_record(*, body: bytes, signature: str, timestamp: str) -> Outcome:
    """Verifies and applies one Event Webhook request (see the module docstring)."""
    events = verified_events(body=body, signature=signature, timestamp=timestamp)
    outcome = Outcome()
    actionable = [e for e in events if e.get("event") in ACTIONABLE and e.get("sg_event_id")]
    outcome.ignored = len(events) - len(actionable)
    now = datetime.now(tz=UTC)
    with transaction.atomic():
        fresh = _first_seen(actionable, now)
        for event in actionable:
            if str(event["sg_event_id"])[:128] not in fresh:
                outcome.duplicates += 1
                continue
            fresh.discard(str(event["sg_event_id"])[:128])  # the same id twice in one request counts once
            if _apply(event):
                outcome.applied += 1
            else:
                outcome.ignored += 1
        for event in _unsettled(events):
            if _settle_accepted(event):
                outcome.applied += 1
                outcome.ignored -= 1
    for label, count in (("applied", outcome.applied), ("duplicate", outcome.duplicates), ("ignored", outcome.ignored)):
        if count:
            metrics.PROVIDER_CALLBACKS.labels(provider=PROVIDER, outcome=label).inc(count)
    return outcome
