"""Quiet hours at dispatch time: a delivery coming due inside its recipient's quiet hours waits.

Fan-out already defers a delivery that would go out in quiet hours (status `deferred` until the
window ends). A delivery that comes due later — a retry after a transient failure, a replay, a
row the sweeper recovered — is checked again when the dispatcher picks it up: inside the window,
it goes back to `deferred` until the window's end, in the recipient's timezone. Critical
categories and channels that never interrupt (in-app, webhooks) are never held.

Cheap by construction: one query for the candidates and one for the preference layers that have
quiet hours at all (usually none), per dispatcher batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db.models import Q

from apps.notifications.models import Delivery, Preference
from apps.notifications.services.preferences import (
    INTERRUPTING_CHANNELS,
    PreferenceIndex,
    quiet_hours_until,
    zone,
)


def deliveries_quiet_until(*, delivery_ids: Sequence[Any], now: datetime) -> dict[Any, datetime]:
    """{delivery id: end of its recipient's quiet hours} for those that must wait now."""
    if not delivery_ids:
        return {}
    rows = list(
        Delivery.objects.filter(
            pk__in=delivery_ids,
            channel__in=[c.value for c in INTERRUPTING_CHANNELS],
            notification__category__critical=False,
        ).values_list("pk", "tenant_id", "recipient_id", "recipient__timezone", "notification__category_id")
    )
    if not rows:
        return {}
    tenants = {r[1] for r in rows}
    recipients = {r[2] for r in rows}
    categories = {r[4] for r in rows}
    # Only layers that set quiet hours can change them: the merge ignores the others for this field.
    layers = list(
        Preference.objects.filter(tenant_id__in=tenants, quiet_hours_start__isnull=False)
        .filter(Q(recipient_id__in=recipients) | Q(recipient__isnull=True))
        .filter(Q(category_id__in=categories) | Q(category__isnull=True))
    )
    if not layers:
        return {}
    by_tenant: dict[Any, list[Preference]] = defaultdict(list)
    for layer in layers:
        by_tenant[layer.tenant_id].append(layer)
    indexes: dict[tuple[Any, int], PreferenceIndex] = {}
    held: dict[Any, datetime] = {}
    for pk, tenant_id, recipient_id, tz_name, category_id in rows:
        if tenant_id not in by_tenant:
            continue
        key = (tenant_id, category_id)
        if key not in indexes:
            indexes[key] = PreferenceIndex(
                [p for p in by_tenant[tenant_id] if p.category_id in (None, category_id)], category_id
            )
        preference = indexes[key].for_recipient(recipient_id)
        if not preference.has_quiet_hours:
            continue
        assert preference.quiet_hours_start is not None and preference.quiet_hours_end is not None
        until = quiet_hours_until(
            now=now, tz=zone(tz_name), start=preference.quiet_hours_start, end=preference.quiet_hours_end
        )
        if until is not None:
            held[pk] = until
    return held


def deliveries_hold_for_quiet_hours(*, delivery_ids: Sequence[Any], now: datetime) -> set[Any]:
    """Puts due deliveries that fall in quiet hours back to `deferred` until the window ends;
    returns their ids (the caller must not publish them). Call it with the rows locked."""
    held = deliveries_quiet_until(delivery_ids=delivery_ids, now=now)
    by_end: dict[datetime, list[Any]] = defaultdict(list)
    for pk, until in held.items():
        by_end[until].append(pk)
    for until, ids in by_end.items():
        Delivery.objects.filter(pk__in=ids, status__in=Delivery.DUE).update(
            status=Delivery.Status.DEFERRED, next_attempt_at=until
        )
    return set(held)
