"""Email engagement: the opens and clicks Signalbox's own tracking links report (`GET /t/o/…`,
`GET /t/c/…`, apps/notifications/public.py; the links are made by apps/providers/tracking.py).

The rows are `apps.providers.models.Engagement`; a delivery's summary is read by
`apps.notifications.selectors.engagement_summary`.
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.notifications import hooks
from apps.notifications.models import Delivery, Engagement
from apps.notifications.services.announce import engagement_announce


def engagement_record(*, delivery_id: str, kind: str, url: str = "", now: datetime | None = None) -> bool:
    """Counts an open or a click of a delivery; False (nothing written) if the delivery is unknown."""
    now = now or timezone.now()
    try:
        tenant_id = Delivery.objects.filter(pk=delivery_id).values_list("tenant_id", flat=True).first()
    except (ValueError, DjangoValidationError):
        return False
    if tenant_id is None:
        return False
    updated = Engagement.objects.filter(delivery_id=delivery_id, kind=kind, url=url).update(
        count=F("count") + 1, last_at=now
    )
    if updated:
        return True
    try:
        with transaction.atomic():
            Engagement.objects.create(
                tenant_id=tenant_id, delivery_id=delivery_id, kind=kind, url=url, first_at=now, last_at=now
            )
            engagement_announce(tenant_id=tenant_id, delivery_id=delivery_id, kind=kind, url=url)
            hooks.engaged([delivery_id])
    except IntegrityError:  # a concurrent first view won the insert (and the event): count this one
        Engagement.objects.filter(delivery_id=delivery_id, kind=kind, url=url).update(count=F("count") + 1, last_at=now)
    return True
