"""The suppression list: addresses a provider told us never to send to again.

Entries come from three places, all through `suppression_add`:
- a permanent send error that is about the address (`suppression_reason_for`): Twilio 21610
  (the person texted STOP), 21211 (not a valid number), 21614 (not a mobile number); an SMTP
  550/551/553 hard bounce; a webhook or chat endpoint that answered 410 Gone (or Slack's
  archived channel / revoked hook);
- provider status callbacks: SendGrid `bounce` (not `blocked`), `dropped` for a bounced or
  invalid address, `spamreport`; Twilio undelivered with one of the codes above or 30004-30006;
- operators (admin).

Fan-out suppresses a (recipient, channel) whose address is listed (`suppressed_address`), and
the send pipeline checks again at send time, for addresses listed after fan-out (a bounce that
arrives while a retry waits). Push is not listed here: FCM's dead tokens deactivate the device
instead. The table is `apps.providers.models.Suppression` (one row per tenant, channel and
normalised address).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.notifications import channels as registry
from apps.notifications.models import Suppression
from apps.observability.audit import audit_record
from apps.providers.base import Channel, Outcome, SendResult

Reason = Suppression.Reason
SUPPRESSIBLE_CHANNELS = frozenset({Channel.EMAIL.value, Channel.SMS.value, Channel.CHAT.value, Channel.WEBHOOK.value})

# Permanent send errors that condemn the address itself (not the message, not our account).
_PERMANENT_CODES: dict[str, dict[str, str]] = {
    Channel.SMS.value: {
        "21610": Reason.UNSUBSCRIBED,
        "21211": Reason.INVALID_ADDRESS,
        "21614": Reason.NOT_MOBILE,
    },
    Channel.EMAIL.value: {
        "550": Reason.HARD_BOUNCE,
        "551": Reason.HARD_BOUNCE,
        "553": Reason.HARD_BOUNCE,
        "invalid_address": Reason.INVALID_ADDRESS,
    },
    Channel.WEBHOOK.value: {"gone": Reason.GONE},
    Channel.CHAT.value: {"gone": Reason.GONE, "channel_is_archived": Reason.GONE, "no_service": Reason.GONE},
}
# Twilio's delivery error codes (status callbacks) that condemn the number.
TWILIO_CALLBACK_CODES: dict[str, str] = {
    **_PERMANENT_CODES[Channel.SMS.value],
    "30004": Reason.BLOCKED,
    "30005": Reason.INVALID_ADDRESS,
    "30006": Reason.NOT_MOBILE,
}


def normalize(channel: str, address: Any) -> str:
    text = str(address or "").strip()
    return text.lower() if channel == Channel.EMAIL else text


def suppression_reason_for(channel: str, result: SendResult) -> str | None:
    """The suppression a permanent send result calls for, or None."""
    if result.outcome is not Outcome.PERMANENT:
        return None
    return _PERMANENT_CODES.get(str(channel), {}).get(result.code)


def suppression_add(
    *,
    tenant_id: Any,
    channel: str,
    address: Any,
    reason: str,
    source: str,
    detail: str = "",
    delivery_id: Any = None,
) -> bool:
    """Lists an address (idempotent: the first report of an address stays); False if it cannot be listed."""
    return bool(
        suppressions_add(
            [
                {
                    "tenant_id": tenant_id,
                    "channel": channel,
                    "address": address,
                    "reason": reason,
                    "source": source,
                    "detail": detail,
                    "delivery_id": delivery_id,
                }
            ]
        )
    )


def suppressions_add(entries: Iterable[dict[str, Any]]) -> int:
    """Lists many addresses in one INSERT … ON CONFLICT DO NOTHING; returns how many were listable."""
    rows: dict[tuple[Any, str, str], Suppression] = {}
    for entry in entries:
        channel = str(entry["channel"])
        address = normalize(channel, entry["address"])
        if channel not in SUPPRESSIBLE_CHANNELS or not address:
            continue
        rows.setdefault(
            (entry["tenant_id"], channel, address),
            Suppression(
                tenant_id=entry["tenant_id"],
                channel=channel,
                address=address[:1000],
                reason=entry["reason"],
                source=str(entry.get("source") or "")[:64],
                detail=str(entry.get("detail") or "")[:2000],
                delivery_id=entry.get("delivery_id"),
                created_at=timezone.now(),
            ),
        )
    if rows:
        Suppression.objects.bulk_create(list(rows.values()), ignore_conflicts=True)
    return len(rows)


def suppressed(*, tenant_id: Any, channel: str, addresses: Iterable[Any]) -> set[str]:
    """The normalised addresses among `addresses` that are listed for this tenant and channel."""
    if channel not in SUPPRESSIBLE_CHANNELS:
        return set()
    wanted = {normalize(channel, a) for a in addresses} - {""}
    if not wanted:
        return set()
    return set(
        # `= ANY(array)`: one parameter, where `IN` writes (and psycopg splits) one per address.
        Suppression.objects.filter(tenant_id=tenant_id, channel=channel, address__any=list(wanted)).values_list(
            "address", flat=True
        )
    )


def suppressed_pairs(*, tenant_id: Any, channels: Sequence[str], recipients: Sequence[Any]) -> set[tuple[int, str]]:
    """(recipient id, channel) pairs whose address is listed: one query for a fan-out chunk."""
    by_address: dict[tuple[str, str], list[int]] = defaultdict(list)
    for channel in channels:
        if channel not in SUPPRESSIBLE_CHANNELS:
            continue
        for recipient in recipients:
            address = normalize(channel, registry.address_for(channel, recipient))
            if address:
                by_address[(channel, address)].append(recipient.id)
    if not by_address:
        return set()
    listed = Suppression.objects.filter(
        tenant_id=tenant_id,
        channel__in={c for c, _ in by_address},
        address__any=list({a for _, a in by_address}),
    ).values_list("channel", "address")
    return {(rid, channel) for channel, address in listed for rid in by_address.get((channel, address), ())}


def suppression_delete(*, suppression: Suppression, actor: Actor = SYSTEM) -> bool:
    """Allows a listed address again: fan-outs and sends from now on go to it. Audited in the same
    transaction; False (and no audit entry) if the row was already gone."""
    # A chat or webhook address may be a URL whose path is the credential (a Slack hook): the
    # audit log keeps only its host.
    address = suppression.address
    if address.startswith(("https://", "http://")):
        parts = urlsplit(address)
        address = f"{parts.scheme}://{parts.hostname}/****"
    with transaction.atomic():
        deleted, _ = Suppression.objects.filter(pk=suppression.pk).delete()
        if deleted:
            audit_record(
                action="suppression.deleted",
                tenant=suppression.tenant,
                actor=actor,
                target=suppression,
                data={"channel": suppression.channel, "address": address, "reason": suppression.reason},
            )
    return bool(deleted)
