"""What the events app hands the platform's upkeep: its retention policies and periodic jobs, the
intents the queue metrics watch, and its figures on the operations dashboard.

Registered by `EventsConfig.ready()`; core and observability know none of it.

Retention: `webhook_messages` (delivered and failed webhook messages with their attempts; never
pending or sending) runs in the hourly `signalbox.maintenance.purge`; `events` (events with their
rule executions and messages: processed, dead, or pending with no attempt ahead; never with a
message in flight) runs in this app's own `signalbox.maintenance.purge_events`.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q
from django.db.models.functions import Coalesce

from apps.core.periodic import PeriodicJob
from apps.core.retention import RetentionPolicy
from apps.events.models import Event, EventStatus, MessageStatus, WebhookMessage
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
