"""What the events app hands the platform's upkeep: its retention policies and periodic jobs, the
intents the queue metrics watch, and its figures on the operations dashboard.

Registered by `EventsConfig.ready()`; core and observability know none of it.

Retention: `webhook_messages` (delivered and failed webhook messages with their attempts; never
pending or sending) runs in the hourly `signalbox.maintenance.purge`; `events` (events with their
rule executions and messages: processed, dead, or pending with no attempt ahead; never with a
message in flight) runs in this app's own `signalbox.maintenance.purge_events`.

On PostgreSQL the four history tables are partitioned by month (apps/core/partitions.py,
docs/partitions.md): events by their UUIDv7 id, rule executions and webhook messages by their
event's id, attempts by their message's (UUIDv7) id. `signalbox.maintenance.purge_events` first
drops an events partition once every event in it is past the longest `events` retention and none is
pending or has a message in flight; the same month's rule executions, messages and attempts go with
it in the same transaction (companions; the attempts of a message made after its event's month, by
DELETE). The hourly purge drops a messages partition past the longest `webhook_messages` retention
with its attempts the same way, and an attempts partition once no message of its id range is left.
The references without a database constraint are kept here: a partition's children never outlive it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db import connection
from django.db.models import Q
from django.db.models.functions import Coalesce

from apps.core.partitions import Partition, PartitionedTable
from apps.core.periodic import PeriodicJob
from apps.core.retention import RetentionPolicy
from apps.events.models import Event, EventStatus, MessageStatus, RuleExecution, WebhookAttempt, WebhookMessage
from apps.observability.collectors import WaitingSource
from apps.observability.dashboard import Figure, changelist

WEBHOOK_IN_FLIGHT = (MessageStatus.PENDING, MessageStatus.SENDING)


def webhook_messages_retention_policy() -> RetentionPolicy:
    return RetentionPolicy(
        name="webhook_messages",
        model=lambda: WebhookMessage,
        default_days=30,
        keep=lambda: Q(status__in=WEBHOOK_IN_FLIGHT),
        description="Delivered and failed webhook messages, with their attempts.",
    )


# --- Partitions (PostgreSQL) -----------------------------------------------------------------------

EVENTS = Event._meta.db_table
RULE_EXECUTIONS = RuleExecution._meta.db_table
MESSAGES = WebhookMessage._meta.db_table
ATTEMPTS = WebhookAttempt._meta.db_table


def _messages_in_flight(lower: uuid.UUID, upper: uuid.UUID) -> bool:
    """A message of these events pending or sending (the `webhook_message_due` index, one partition)."""
    return WebhookMessage.objects.filter(event_id__gte=lower, event_id__lt=upper, status__in=WEBHOOK_IN_FLIGHT).exists()


def _events_pending(lower: uuid.UUID, upper: uuid.UUID) -> bool:
    """An event of the range still to be processed (first attempt, retry, replay): its processing
    writes rule executions and messages into the range (the `event_pending` index)."""
    return Event.objects.filter(id__gte=lower, id__lt=upper, status=EventStatus.PENDING).exists()


def _events_in_use_since(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """Under the lock (events, and the same month of executions and messages): what a write could
    have changed — an event replayed, a message replayed — asked from indexes."""
    return _events_pending(lower, upper) or _messages_in_flight(lower, upper)


def _events_in_use(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """An event of the range inside the longest `events` retention, pending, or with a message in
    flight (the `events` policy's `keep`; a pending one, even with no attempt ahead, is left to the
    batched DELETE, which the next run follows with the drop)."""
    young = Event.objects.filter(id__gte=lower, id__lt=upper, created_at__gte=horizon).exists()
    return young or _messages_made_elsewhere(lower, upper) or _events_in_use_since(lower, upper, now, horizon)


def _messages_in_use_since(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    return _messages_in_flight(lower, upper) or _events_pending(lower, upper)


def _messages_in_use(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """A message of these events inside the longest `webhook_messages` retention or in flight, or an
    event of the range still pending (it could fan out more messages into the range)."""
    rows = WebhookMessage.objects.filter(event_id__gte=lower, event_id__lt=upper)
    young = rows.filter(created_at__gte=horizon).exists()
    return young or _messages_made_elsewhere(lower, upper) or _messages_in_use_since(lower, upper, now, horizon)


def _messages_made_elsewhere(lower: uuid.UUID, upper: uuid.UUID) -> bool:
    """A message made in this month (its id in the range) for an event of another month (processed
    after its month ended): its attempts share the month's attempts partition, which must then
    stay. Such a month goes once the earlier one has (the drop goes oldest first, in one run)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {MESSAGES} WHERE id >= %s AND id < %s AND (event_id < %s OR event_id >= %s) LIMIT 1",  # noqa: S608
            [lower, upper, lower, upper],
        )
        return cursor.fetchone() is not None


def _late_messages_attempts(partition: Partition) -> dict[str, int]:
    """Under the drop's lock: the attempts of these events' messages made after the events' month
    (their attempts are in a later partition, which stays). The others' attempts are in the same
    month's attempts partition, dropped with it (a companion)."""
    lower, upper = partition.lower, partition.upper
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {ATTEMPTS} WHERE message_id IN (SELECT id FROM {MESSAGES} "  # noqa: S608
            "WHERE event_id >= %s AND event_id < %s AND (id < %s OR id >= %s))",
            [lower, upper, lower, upper],
        )
        return {WebhookAttempt._meta.label: cursor.rowcount} if cursor.rowcount else {}


def _attempts_in_use(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """A message of this id range is still there (its attempts stay with it)."""
    return WebhookMessage.objects.filter(id__gte=lower, id__lt=upper).exists()


def _rule_executions_in_use(lower: uuid.UUID, upper: uuid.UUID, now: datetime, horizon: datetime) -> bool:
    """An event of this range is still there (executions normally go with their events' partition)."""
    return Event.objects.filter(id__gte=lower, id__lt=upper).exists()


EVENT_POLICIES = ("events",)
MESSAGE_POLICIES = ("webhook_messages",)

# Dropped by `signalbox.maintenance.purge_events` (registered with shared_purge=False).
EVENT_PARTITIONED_TABLES = (
    PartitionedTable(
        table=EVENTS,
        label=Event._meta.label_lower,
        key="id",
        policies=EVENT_POLICIES,
        in_use=_events_in_use,
        recheck=_events_in_use_since,
        before_drop=_late_messages_attempts,
        companions=(RULE_EXECUTIONS, MESSAGES, ATTEMPTS),
    ),
    PartitionedTable(
        table=RULE_EXECUTIONS,
        label=RuleExecution._meta.label_lower,
        key="event_id",
        policies=EVENT_POLICIES,
        in_use=_rule_executions_in_use,
    ),
)

# Dropped by the hourly `signalbox.maintenance.purge`, with the `webhook_messages` policy.
WEBHOOK_PARTITIONED_TABLES = (
    PartitionedTable(
        table=MESSAGES,
        label=WebhookMessage._meta.label_lower,
        key="event_id",
        policies=MESSAGE_POLICIES,
        in_use=_messages_in_use,
        recheck=_messages_in_use_since,
        before_drop=_late_messages_attempts,
        companions=(ATTEMPTS,),
    ),
    PartitionedTable(
        table=ATTEMPTS,
        label=WebhookAttempt._meta.label_lower,
        key="message_id",
        policies=MESSAGE_POLICIES,
        in_use=_attempts_in_use,
    ),
)


PERIODIC_JOBS = (
    PeriodicJob(
        name="webhooks: dispatch due messages",
        task="signalbox.webhooks.dispatch_due",
        every_seconds=5,
        queue="webhooks",
        description="Publishes webhook messages whose next_attempt_at has come; reclaims sends of dead workers.",
    ),
    PeriodicJob(
        name="events: sweep unprocessed events",
        task="signalbox.events.sweep",
        every_seconds=60,
        queue="events",
        description="Republishes events committed but never processed (a lost publish, a dead worker).",
    ),
    PeriodicJob(
        name="events: purge expired events",
        task="signalbox.maintenance.purge_events",
        every_seconds=3600,
        description=(
            "Deletes events, rule executions and webhook messages past retention (SIGNALBOX_EVENT_RETENTION_DAYS)."
        ),
    ),
)

WAITING_SOURCES = (
    # An event due for processing (first attempt or retry).
    WaitingSource(
        model="events.Event",
        waiting=lambda now: (
            Q(status=EventStatus.PENDING) & (Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True))
        ),
        since=Coalesce("next_attempt_at", "created_at"),
        queue="events",
    ),
    # An outbound webhook due for its next attempt.
    WaitingSource(
        model="events.WebhookMessage",
        waiting=lambda now: (
            Q(status=MessageStatus.PENDING) & (Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True))
        ),
        since=Coalesce("next_attempt_at", "created_at"),
        queue="webhooks",
    ),
)


def intents_today(since: datetime) -> list[Figure]:
    return [
        Figure(
            "Events",
            Event.objects.filter(created_at__gte=since).count(),
            changelist("events.event", created_at__gte=since.isoformat()),
        )
    ]


def dead_letters_today(since: datetime) -> list[Figure]:
    # Counts rows that went bad today (whenever they were created): by updated_at, and the link
    # filters the same way, so the list shows exactly the rows counted.
    return [
        Figure(
            "Webhook messages failed",
            WebhookMessage.objects.filter(status=MessageStatus.FAILED, updated_at__gte=since).count(),
            changelist("events.webhookmessage", status="failed", updated_at__gte=since.isoformat()),
        )
    ]
