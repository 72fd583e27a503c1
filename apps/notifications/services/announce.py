"""Delivery outcomes as platform events, for tenants' rules and webhook endpoints.

`delivery.sent`, `delivery.delivered`, `delivery.bounced`, `delivery.failed` and `delivery.dead`
are emitted per delivery when it reaches that status; `delivery.opened` and `delivery.clicked`
on an email's first open and first click on each link; `notification.sent` once a notification
has settled (no delivery in flight), with its deliveries counted by status. Each is written in
the transaction that records the change, so a rolled-back record announces nothing, and only
when the tenant listens: an `Audience` asks once per tenant what it listens to, and a send
batch keeps one for all its records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Count

from apps.core.live import live_listening, live_publish_on_commit
from apps.core.ports import Listening, event_bus
from apps.notifications.models import Delivery, Notification
from apps.notifications.services.live import notifications_live_deliveries, notifications_tenant_group

Status = Delivery.Status

DELIVERY_EVENT_TYPES: dict[str, str] = {
    Status.SENT: "delivery.sent",
    Status.DELIVERED: "delivery.delivered",
    Status.BOUNCED: "delivery.bounced",
    Status.FAILED: "delivery.failed",
    Status.DEAD: "delivery.dead",
}

_DELIVERY_FIELDS = (
    "id",
    "tenant_id",
    "notification_id",
    "recipient__external_id",
    "channel",
    "status",
    "provider",
    "provider_message_id",
    "attempts",
    "error_code",
    "notification__template__key",
    "notification__category__key",
    "notification__metadata__source",
)


class Audience:
    """Which event types each tenant listens to, looked up once per tenant."""

    def __init__(self) -> None:
        self._listeners: dict[Any, Listening] = {}

    def observes(self, tenant_id: Any, event_type: str) -> bool:
        if tenant_id not in self._listeners:
            self._listeners[tenant_id] = event_bus().listeners_of(tenant_id)
        return self._listeners[tenant_id].observe(event_type)


def deliveries_announce(outcomes: Iterable[tuple[Any, Any, str]], audience: Audience | None = None) -> int:
    """Emits the event of each `(tenant_id, delivery_id, status)` that has one and a listener;
    returns how many were emitted. Call inside the transaction that recorded the statuses."""
    outcomes = list(outcomes)
    deliveries_live(outcomes)
    audience = audience or Audience()
    tenants = {tenant_id for tenant_id, _, _ in outcomes}  # one, from a fan-out chunk
    if not any(audience.observes(t, e) for t in tenants for e in set(DELIVERY_EVENT_TYPES.values())):
        return 0  # nobody listens: no need to look at each row
    wanted: dict[str, str] = {}
    for tenant_id, delivery_id, status in outcomes:
        event_type = DELIVERY_EVENT_TYPES.get(str(status))
        if event_type is not None and audience.observes(tenant_id, event_type):
            wanted[str(delivery_id)] = event_type
    if not wanted:
        return 0
    emitted = 0
    for row in Delivery.objects.filter(pk__in=list(wanted)).values(*_DELIVERY_FIELDS):
        event_type = wanted[str(row["id"])]
        if DELIVERY_EVENT_TYPES.get(row["status"]) != event_type:
            continue  # moved on in the meantime (a callback outran the record): its own report announces it
        _emit(event_type, row)
        emitted += 1
    return emitted


def deliveries_live(outcomes: list[tuple[Any, Any, str]]) -> None:
    """Puts each status change on its tenant's live activity stream after commit (docs/realtime.md),
    only for tenants with a dashboard open: one Redis lookup, no query; and the new counts on the
    streams of their notifications, when one is followed (`live.py`)."""
    tenants = {tenant_id for tenant_id, _, _ in outcomes}
    listening = live_listening({f"tenant.{t}" for t in tenants} | {notifications_tenant_group(t) for t in tenants})
    notifications_live_deliveries(outcomes, listening)
    if any(f"tenant.{t}" in listening for t in tenants):
        live_publish_on_commit(
            [
                (f"tenant.{t}", {"type": "delivery.status", "data": {"delivery_id": str(d), "status": str(s)}})
                for t, d, s in outcomes
                if f"tenant.{t}" in listening
            ]
        )


def engagement_announce(*, tenant_id: Any, delivery_id: Any, kind: str, url: str = "") -> bool:
    """Emits `delivery.opened` (a first open) or `delivery.clicked` (a first click on a link)."""
    event_type = {"open": "delivery.opened", "click": "delivery.clicked"}[kind]
    if not event_bus().listeners_of(tenant_id).observe(event_type):
        return False
    row = Delivery.objects.filter(pk=delivery_id, tenant_id=tenant_id).values(*_DELIVERY_FIELDS).first()
    if row is None:
        return False
    _emit(event_type, row, **({"url": url} if kind == "click" else {}))
    return True


def _emit(event_type: str, row: dict[str, Any], **extra: Any) -> None:
    bus = event_bus()
    bus.emit(
        tenant=row["tenant_id"],
        type=event_type,
        subject=("delivery", str(row["id"])),
        payload={
            "delivery_id": row["id"],
            "notification_id": row["notification_id"],
            "recipient": row["recipient__external_id"],
            "channel": row["channel"],
            "status": row["status"],
            "provider": row["provider"],
            "provider_message_id": row["provider_message_id"],
            "attempts": row["attempts"],
            "error_code": row["error_code"],
            "template": row["notification__template__key"] or "",
            "category": row["notification__category__key"],
            **extra,
        },
        only_if_observed=False,
        depth=bus.caused_depth(row["notification__metadata__source"]),
    )


def notification_announce_sent(*, notification_id: Any) -> bool:
    """Emits `notification.sent` for a notification that has just settled (the caller checked
    that its tenant listens); False if it is gone."""
    notification = (
        Notification.objects.filter(pk=notification_id)
        .values(
            "id",
            "tenant_id",
            "status",
            "recipient_count",
            "template__key",
            "category__key",
            "completed_at",
            "metadata__source",
        )
        .first()
    )
    if notification is None:
        return False
    counts = dict(
        Delivery.objects.filter(notification_id=notification_id)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    bus = event_bus()
    bus.emit(
        tenant=notification["tenant_id"],
        type="notification.sent",
        subject=("notification", str(notification["id"])),
        payload={
            "notification_id": notification["id"],
            "template": notification["template__key"] or "",
            "category": notification["category__key"],
            "recipients": notification["recipient_count"] or 0,
            "deliveries": counts,
            "completed_at": notification["completed_at"],
        },
        only_if_observed=False,
        depth=bus.caused_depth(notification["metadata__source"]),
    )
    return True
