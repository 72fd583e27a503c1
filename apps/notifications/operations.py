"""What the notifications app hands the platform's upkeep: its retention policies and periodic jobs,
the intents the queue metrics watch, and its figures on the operations dashboard.

Registered by `NotificationsConfig.ready()`; core and observability know none of it.

Retention (run by the hourly `signalbox.maintenance.purge`, apps/core/retention.py), children
before parents:

- `deliveries`: deliveries except in-app, with their attempts and digest items;
- `inbox_read`, `inbox_unread`: in-app deliveries (the inbox), read or never read;
  for all three, never pending, queued, sending, deferred, digest or unknown, nor inside the
  notification's dedup window (a later duplicate must still find them);
- `digest_windows`: closed digest windows (never an open one);
- `notifications`: notifications with no delivery left (never scheduled, accepted, fanning out or
  dispatched; never younger than `IDEMPOTENCY_TTL_HOURS`, so an idempotency key still answers).

On PostgreSQL deliveries and attempts are partitioned by month (apps/core/partitions.py,
docs/partitions.md): before its batched DELETE, the purge drops a deliveries partition once every row
in it is past the longest of the three delivery policies for any tenant, and none is in flight or in
a dedup window (their digest items go with it); an attempts partition goes once no delivery of its
id range is left.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db import connection, models
from django.db.models import Count, Exists, ExpressionWrapper, F, OuterRef, Q, Value
from django.db.models.lookups import GreaterThan

from apps.core.conf import core_settings
from apps.core.partitions import Partition, PartitionedTable
from apps.core.periodic import PeriodicJob
from apps.core.retention import RetentionPolicy
from apps.notifications.models import Delivery, DeliveryAttempt, DigestItem, DigestWindow, Notification
from apps.observability.collectors import WaitingSource
from apps.observability.dashboard import Figure, changelist, day_of, uuid7_floor
from apps.providers.base import Channel
from workers.queues import PRIORITY_QUEUES

DELIVERY_IN_FLIGHT = (
    Delivery.Status.PENDING,
    Delivery.Status.QUEUED,
    Delivery.Status.SENDING,
    Delivery.Status.DEFERRED,
    Delivery.Status.DIGEST,
    Delivery.Status.UNKNOWN,
)
NOTIFICATION_OPEN = (
    Notification.Status.SCHEDULED,
    Notification.Status.ACCEPTED,
    Notification.Status.FANNING_OUT,
    Notification.Status.DISPATCHED,
)

# --- Retention ---------------------------------------------------------------------------------


def _delivery_in_flight() -> Q:
    return Q(status__in=DELIVERY_IN_FLIGHT)


def _inside_dedup_window(now: datetime) -> Q:
    # A later notification with the same dedup_key looks for this row until its window ends.
    window_end = ExpressionWrapper(
        F("created_at") + F("notification__dedup_window_seconds") * Value(timedelta(seconds=1)),
        output_field=models.DateTimeField(),
    )
    return Q(dedup_key__isnull=False) & Q(GreaterThan(window_end, Value(now)))


def _notification_still_needed() -> Q:
    return Q(status__in=NOTIFICATION_OPEN) | Q(Exists(Delivery.objects.filter(notification_id=OuterRef("pk"))))


def _idempotency_window() -> timedelta:
    return timedelta(hours=core_settings().idempotency_ttl_hours)


def retention_policies() -> list[RetentionPolicy]:
    """The policies `signalbox.maintenance.purge` runs for this app, children before parents."""
    return [
        RetentionPolicy(
            name="deliveries",
            model=lambda: Delivery,
            default_days=30,
            scope=lambda: ~Q(channel=Channel.IN_APP),
            keep=_delivery_in_flight,
            keep_at=_inside_dedup_window,
            description="Deliveries (except the in-app inbox), with their attempts and digest items.",
        ),
        RetentionPolicy(
            name="inbox_read",
            model=lambda: Delivery,
            default_days=90,
            scope=lambda: Q(channel=Channel.IN_APP, read_at__isnull=False),
            keep=_delivery_in_flight,
            keep_at=_inside_dedup_window,
            description="In-app inbox items the recipient has read.",
        ),
        RetentionPolicy(
            name="inbox_unread",
            model=lambda: Delivery,
            default_days=180,
            scope=lambda: Q(channel=Channel.IN_APP, read_at__isnull=True),
            keep=_delivery_in_flight,
            keep_at=_inside_dedup_window,
            description="In-app inbox items never read.",
        ),
        RetentionPolicy(
            name="digest_windows",
            model=lambda: DigestWindow,
            default_days=30,
            keep=lambda: Q(status=DigestWindow.Status.OPEN),
            description="Closed digest windows (the digests sent stay as notifications).",
        ),
        RetentionPolicy(
            name="notifications",
            model=lambda: Notification,
            default_days=30,
            keep=_notification_still_needed,
            min_age=_idempotency_window,
            description="Notifications whose deliveries are all gone.",
        ),
    ]


# --- Partitions (PostgreSQL) -----------------------------------------------------------------------

DELIVERY_POLICIES = ("deliveries", "inbox_read", "inbox_unread")


def _deliveries_in_use(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """A row of these notifications still inside the longest retention, in flight, or in a dedup
    window, or one of these notifications still open (it could fan out more rows into the range)."""
    rows = Delivery.objects.filter(notification_id__gte=lower, notification_id__lt=upper)
    needed = rows.filter(Q(created_at__gte=horizon) | _delivery_in_flight() | _inside_dedup_window(now))
    return _deliveries_in_use_since(lower, upper, now, horizon) or needed.exists()


def _deliveries_in_use_since(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """What a write can change after `_deliveries_in_use` said no, asked from indexes under the lock: a
    delivery put back in flight (a replay, a retry: the `notif_delivery_inflight` partial index), or a
    notification of the range still open, which could still fan out new rows into it."""
    in_flight = Delivery.objects.filter(
        notification_id__gte=lower, notification_id__lt=upper, status__in=Delivery.IN_FLIGHT
    )
    still_open = Notification.objects.filter(id__gte=lower, id__lt=upper, status__in=NOTIFICATION_OPEN)
    return in_flight.exists() or still_open.exists()


def _delivery_partition_dependents(partition: Partition) -> dict[str, int]:
    """The digest items of the partition's deliveries (a OneToOne without a database constraint)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {DigestItem._meta.db_table} WHERE delivery_id IN (SELECT id FROM {partition.name})"  # noqa: S608
        )
        return {DigestItem._meta.label: cursor.rowcount} if cursor.rowcount else {}


def _attempts_in_use(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """A delivery of this id range is still there (its attempts stay with it)."""
    return Delivery.objects.filter(id__gte=lower, id__lt=upper).exists()


PARTITIONED_TABLES = (
    PartitionedTable(
        table=Delivery._meta.db_table,
        label=Delivery._meta.label_lower,
        key="notification_id",
        policies=DELIVERY_POLICIES,
        in_use=_deliveries_in_use,
        recheck=_deliveries_in_use_since,
        before_drop=_delivery_partition_dependents,
    ),
    PartitionedTable(
        table=DeliveryAttempt._meta.db_table,
        label=DeliveryAttempt._meta.label_lower,
        key="delivery_id",
        policies=DELIVERY_POLICIES,
        in_use=_attempts_in_use,
    ),
)

# --- Periodic jobs -----------------------------------------------------------------------------

PERIODIC_JOBS = (
    PeriodicJob(
        name="notifications: dispatch due deliveries",
        task="signalbox.notifications.dispatch_due",
        every_seconds=5,
        description="Queues due retries, quiet-hour deferrals and scheduled notifications.",
    ),
    PeriodicJob(
        name="notifications: sweep stuck rows",
        task="signalbox.notifications.sweep",
        every_seconds=30,
        description="Republishes intents and chunks never run; requeues lost and dead-worker deliveries.",
    ),
    PeriodicJob(
        name="digests: flush due windows",
        task="signalbox.digests.flush_due",
        every_seconds=60,
        queue="digests",
        description="Hands digest windows whose time has come to flush tasks: one message per recipient and channel.",
    ),
)

# --- Queue metrics: what waits in PostgreSQL, by queue ---------------------------------------------

WAITING_SOURCES = (
    # Accepted, fan-out task published on the notification's priority queue, not started yet.
    WaitingSource(
        model="notifications.Notification",
        waiting=lambda now: Q(status=Notification.Status.ACCEPTED),
        since="created_at",
        queue_field="priority",
        queue_by_value=dict(PRIORITY_QUEUES),
    ),
    # A fan-out chunk published and not done.
    WaitingSource(
        model="notifications.FanoutChunk",
        waiting=lambda now: Q(published_at__isnull=False, done_at__isnull=True),
        since="published_at",
        queue_field="notification__priority",
        queue_by_value=dict(PRIORITY_QUEUES),
    ),
    # A delivery whose send task is on the broker.
    WaitingSource(
        model="notifications.Delivery",
        waiting=lambda now: Q(status=Delivery.Status.QUEUED),
        since="queued_at",
        queue_field="notification__priority",
        queue_by_value=dict(PRIORITY_QUEUES),
    ),
    # A retry or quiet-hours deferral that is due: the dispatcher (maintenance) should have sent it on.
    WaitingSource(
        model="notifications.Delivery",
        waiting=lambda now: Q(status__in=(Delivery.Status.PENDING, Delivery.Status.DEFERRED), next_attempt_at__lte=now),
        since="next_attempt_at",
        queue_field="notification__priority",
        queue_by_value=dict(PRIORITY_QUEUES),
    ),
)

# --- The operations dashboard ----------------------------------------------------------------------
# Deliveries and notifications are counted by id range: their ids are UUIDv7, ordered by creation,
# so "since midnight" is a primary-key range scan, not a scan of the table.


def intents_today(since: datetime) -> list[Figure]:
    return [
        Figure(
            "Notifications",
            Notification.objects.filter(id__gte=uuid7_floor(since)).count(),
            changelist("notifications.notification", **day_of(since)),
        )
    ]


def _deliveries_by_status(since: datetime) -> dict[str, int]:
    rows = Delivery.objects.filter(id__gte=uuid7_floor(since)).values_list("status").annotate(n=Count("id"))
    return dict(rows.order_by())


def deliveries_today(since: datetime) -> list[Figure]:
    by_status = _deliveries_by_status(since)
    return [
        Figure(
            str(label),
            by_status.get(value, 0),
            changelist("notifications.delivery", status=value, created_at__gte=since.isoformat()),
        )
        for value, label in Delivery.Status.choices
    ]


def dead_letters_today(since: datetime) -> list[Figure]:
    by_status = _deliveries_by_status(since)
    return [
        Figure(
            "Deliveries dead (out of attempts)",
            by_status.get(Delivery.Status.DEAD, 0),
            changelist("notifications.delivery", status="dead", created_at__gte=since.isoformat()),
        ),
        Figure(
            "Deliveries failed (permanent)",
            by_status.get(Delivery.Status.FAILED, 0),
            changelist("notifications.delivery", status="failed", created_at__gte=since.isoformat()),
        ),
    ]
