"""One-click unsubscribe (RFC 8058): what `POST /u/<token>` does (apps/notifications/public.py),
the link every email carries in `List-Unsubscribe` (made by apps/providers/tracking.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction

from apps.core.actors import Actor
from apps.notifications.models import Category, Preference, Recipient
from apps.notifications.services.preferences import preferences_replace
from apps.notifications.services.recipients import recipient_update
from apps.observability.audit import audit_record
from apps.providers.base import Channel


@transaction.atomic
def recipient_unsubscribe(*, tenant_id: str, recipient_id: str, category: str = "") -> bool:
    """One-click unsubscribe: email off for the category, or the recipient unsubscribed from everything.

    Goes through the notifications services (the preference layers, the recipient's flag);
    False if the recipient or category no longer exists. Doing it twice changes nothing more.
    """
    recipient = Recipient.objects.select_for_update().filter(tenant_id=tenant_id, pk=recipient_id).first()
    if recipient is None:
        return False
    if not category:
        recipient_update(recipient=recipient, data={"unsubscribed": True})
    else:
        if not Category.objects.filter(tenant_id=tenant_id, key=category).exists():
            return False
        rows = Preference.objects.filter(tenant_id=tenant_id, recipient=recipient).select_related("category")
        layers: list[dict[str, Any]] = [
            {
                "category": row.category.key if row.category else None,
                "channels": dict(row.channels or {}),
                "digest": row.digest,
                "quiet_hours_start": row.quiet_hours_start,
                "quiet_hours_end": row.quiet_hours_end,
            }
            for row in rows
        ]
        layer = next((layer for layer in layers if layer["category"] == category), None)
        if layer is None:
            layer = {"category": category, "channels": {}}
            layers.append(layer)
        layer["channels"][Channel.EMAIL.value] = False
        preferences_replace(tenant=recipient.tenant, recipient=recipient, layers=list[Mapping[str, Any]](layers))
    audit_record(
        action="recipient.unsubscribed",
        tenant=recipient.tenant,
        actor=Actor(kind="recipient", id=str(recipient.pk)),
        target=recipient,
        data={"category": category or "*", "via": "list-unsubscribe"},
    )
    return True
