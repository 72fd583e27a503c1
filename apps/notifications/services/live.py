"""A notification's live state (status and per-channel delivery counts), pushed to its streams.

The realtime notification stream (docs/realtime.md) is push-driven: whoever changes a
notification's status or one of its deliveries' statuses calls in here, and once that commits
the state is read and published to `notification.<id>`, only when someone follows it. The stream
reads the same state itself only when it (re)connects.

Ordering: each state is read under a per-notification advisory lock and numbered from a
PostgreSQL sequence taken under that lock, so a higher number is always a later read (it has seen
every commit the lower one saw). Two writers' publishes may reach Redis in either order; the
stream keeps the highest number. On SQLite (`make run`) the number is the clock: best effort.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import Count

from apps.core.live import live_publish_to_listeners
from apps.notifications.models import Delivery, Notification

FINAL = (Notification.Status.COMPLETED, Notification.Status.CANCELLED, Notification.Status.FAILED)
_LOCK_CLASS = 7411  # the first key of pg_advisory_xact_lock(int, int): this module's locks only


def notification_group(notification_id: Any) -> str:
    return f"notification.{notification_id}"


def notifications_tenant_group(tenant_id: Any) -> str:
    """Listened (never sent to) while any notification stream of the tenant is open: lets a
    delivery batch skip looking up its notifications when nobody follows one."""
    return f"notifications.{tenant_id}"


def notification_live_state(*, notification_id: Any, tenant_id: Any = None) -> dict[str, Any] | None:
    """`{"type": "notification.status", "id": n, "data": {status, channels}}`, or None when there
    is no such notification (of this tenant). Reads in its own short transaction (see the module
    docstring for the numbering)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(%s)), nextval('notif_delivery_change_seq')",
                    [_LOCK_CLASS, str(notification_id)],
                )
                number = int(cursor.fetchone()[1])
        else:
            number = time.time_ns() // 1000
        found = Notification.objects.filter(pk=notification_id)
        if tenant_id is not None:
            found = found.filter(tenant_id=tenant_id)
        status = found.values_list("status", flat=True).first()
        if status is None:
            return None
        channels: dict[str, dict[str, int]] = {}
        for channel, state, n in (
            Delivery.objects.filter(notification_id=notification_id)
            .order_by()
            .values_list("channel", "status")
            .annotate(n=Count("id"))
        ):
            channels.setdefault(channel, {})[state] = n
    return {"type": "notification.status", "id": number, "data": {"status": status, "channels": channels}}


def _publish_states(notification_ids: Iterable[Any]) -> None:
    groups = {notification_group(pk): pk for pk in notification_ids}

    def build(listened: set[str]) -> list[tuple[str, dict[str, Any]]]:
        states = ((group, notification_live_state(notification_id=groups[group])) for group in sorted(listened))
        return [(group, state) for group, state in states if state is not None]

    live_publish_to_listeners(groups, build)


def notification_live_changed(*, notification_id: Any) -> None:
    """The notification's status changed: its streams get the new state after commit."""
    _publish_states([notification_id])


def notifications_live_deliveries(outcomes: Iterable[tuple[Any, Any, str]], listening: set[str]) -> None:
    """Delivery statuses `(tenant_id, delivery_id, status)` changed: the streams of their
    notifications get the new counts after commit. `listening` is the caller's listener lookup,
    which included `notifications_tenant_group` of each tenant: without an open notification
    stream in the tenant this costs nothing; with one, one query maps deliveries to notifications."""
    if not listening:
        return  # nobody listens (the common case): decided without a look at each row
    ids = [d for t, d, _ in outcomes if notifications_tenant_group(t) in listening]
    if ids:
        _publish_states(set(Delivery.objects.filter(pk__in=ids).order_by().values_list("notification_id", flat=True)))
