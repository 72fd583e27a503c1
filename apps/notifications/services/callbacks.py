"""What providers report after a send: a delivery moves forward to `delivered`, `bounced` or
`failed`, and never back.

Providers retry their callbacks and send them out of order (SendGrid's `delivered` may arrive
after its `bounce`, Twilio's `sent` after `delivered`). Every report is one conditional UPDATE
whose `WHERE status IN (…)` names only the statuses that are earlier in `STATUS_ORDER`, so a
late or repeated report finds nothing to change, and two racing reports cannot both win.

A provider's report may also settle a delivery our side had not: one still `sending` (the
callback outran the worker's record), `unknown` (the answer was lost and the delivery waits for
this very report before any retry), `pending` or `queued` (a retry waits: the report proves the
provider has it, so the retry is cancelled), or `dead`. A `sent` report (SendGrid's `processed`,
Twilio's `sent`) says only that the provider accepted the message; it settles such a delivery
as `sent` and leaves later reports to move it on.
A report that moves a delivery emits its platform event (`delivery.delivered`, …) with it, and
counts in `signalbox_deliveries_total` under its new status.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.notifications import hooks
from apps.notifications.models import Delivery
from apps.notifications.services.announce import deliveries_announce
from apps.observability import metrics

Status = Delivery.Status

# Earlier statuses have lower ranks. The provider-reported outcomes share one rank: the first
# one reported is final (a `delivered` after a `bounce` changes nothing, and the other way round).
STATUS_ORDER: dict[str, int] = {
    Status.PENDING: 0,
    Status.QUEUED: 0,
    Status.SENDING: 0,
    Status.UNKNOWN: 0,  # the answer was lost; the provider's report settles it
    Status.DEAD: 0,  # we gave up, yet the provider had it after all
    Status.SENT: 1,
    Status.DELIVERED: 2,
    Status.BOUNCED: 2,
    Status.FAILED: 2,
    Status.READ: 3,
}
REPORTABLE = (Status.SENT, Status.DELIVERED, Status.BOUNCED, Status.FAILED)


def earlier_than(status: str) -> list[str]:
    rank = STATUS_ORDER[status]
    return [s for s, r in STATUS_ORDER.items() if r < rank]


def delivery_report(
    *,
    delivery_id: Any,
    status: str,
    provider: str = "",
    provider_message_id: str = "",
    error_code: str = "",
    detail: str = "",
    at: datetime | None = None,
    tenant_id: Any = None,
) -> bool:
    """Moves a delivery forward to a provider-reported status; False if it was not earlier (or unknown)."""
    if status not in REPORTABLE:
        raise ValueError(f"providers report {', '.join(REPORTABLE)}, not {status!r}")
    at = at or timezone.now()
    # A report settles what our side was unsure of: no request is in flight any more.
    values: dict[str, Any] = {
        "status": status,
        "next_attempt_at": None,
        "lease_expires_at": None,
        "in_flight_provider": "",
    }
    if status == Status.SENT:
        values.update(error_code="", last_error="")
    elif status == Status.DELIVERED:
        values.update(delivered_at=at, error_code="", last_error="")
    else:
        values.update(failed_at=at, error_code=(error_code or status)[:64], last_error=detail[:2000])
    rows = Delivery.objects.filter(pk=delivery_id, status__in=earlier_than(status))
    if tenant_id is not None:
        rows = rows.filter(tenant_id=tenant_id)
    with transaction.atomic():
        try:
            moved = rows.update(**values)
        except (ValueError, ValidationError):  # not a UUID
            return False
        if not moved:
            return False
        # Fill in what the worker's record would have written, had the callback not outrun it.
        filled = Delivery.objects.filter(pk=delivery_id)
        filled.filter(sent_at__isnull=True).update(sent_at=at)
        if provider:
            filled.filter(provider="").update(provider=provider)
        if provider_message_id:
            filled.filter(Q(provider_message_id="")).update(provider_message_id=provider_message_id[:255])
        owner, channel, sent_by = filled.values_list("tenant_id", "channel", "provider").get()
        deliveries_announce([(owner, delivery_id, status)])
        hooks.delivery_outcomes([(delivery_id, status)])
    metrics.DELIVERIES.labels(channel=channel, provider=sent_by or provider, status=status).inc()
    return True
