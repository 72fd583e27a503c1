"""The operations dashboard in admin: today's intents, deliveries by status, dead letters, running tasks,
and what waits on each queue, each number linking to the admin list it counts.

Reads only (selectors). Deliveries and notifications are counted by id range: their ids are UUIDv7,
ordered by creation, so "since midnight" is a primary-key range scan, not a scan of the table.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Figure:
    """One number on the page and the admin list it counts."""

    label: str
    count: int
    url: str = ""


@dataclass
class Dashboard:
    since: datetime
    intents: list[Figure] = field(default_factory=list)
    deliveries: list[Figure] = field(default_factory=list)
    dead_letters: list[Figure] = field(default_factory=list)
    tasks: list[Figure] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    queue_error: str = ""


def uuid7_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of that millisecond: `id >= uuid7_floor(t)` is "created at or after t"."""
    millis = int(moment.timestamp() * 1000)
    return uuid.UUID(int=(millis & ((1 << 48) - 1)) << 80 | (0x7 << 76) | (0x2 << 62))


def start_of_today(now: datetime | None = None) -> datetime:
    return timezone.localtime(now or timezone.now()).replace(hour=0, minute=0, second=0, microsecond=0)


def _changelist(model: str, **params: Any) -> str:
    app_label, model_name = model.split(".")
    url = reverse(f"admin:{app_label}_{model_name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _day(since: datetime) -> dict[str, int]:
    """The date_hierarchy parameters of that day."""
    return {"created_at__year": since.year, "created_at__month": since.month, "created_at__day": since.day}


def dashboard_build(*, now: datetime | None = None, with_queues: bool = True) -> Dashboard:
    from apps.events.models import Event, WebhookMessage
    from apps.notifications.models import Delivery, Notification
    from apps.tasks.models import TaskExecution
    from apps.workflows.models import TransitionIntent

    since = start_of_today(now)
    floor = uuid7_floor(since)
    board = Dashboard(since=since)

    board.intents = [
        Figure(
            "Notifications",
            Notification.objects.filter(id__gte=floor).count(),
            _changelist("notifications.notification", **_day(since)),
        ),
        Figure(
            "Tracked tasks",
            TaskExecution.objects.filter(created_at__gte=since).count(),
            _changelist("tasks.taskexecution", **_day(since)),
        ),
        Figure(
            "Transition intents",
            TransitionIntent.objects.filter(created_at__gte=since).count(),
            _changelist("workflows.transitionintent", created_at__gte=since.isoformat()),
        ),
        Figure(
            "Events",
            Event.objects.filter(created_at__gte=since).count(),
            _changelist("events.event", created_at__gte=since.isoformat()),
        ),
    ]

    by_status = dict(Delivery.objects.filter(id__gte=floor).values_list("status").annotate(n=Count("id")).order_by())
    board.deliveries = [
        Figure(
            str(label),
            by_status.get(value, 0),
            _changelist("notifications.delivery", status=value, created_at__gte=since.isoformat()),
        )
        for value, label in Delivery.Status.choices
    ]

    board.dead_letters = [
        Figure(
            "Deliveries dead (out of attempts)",
            by_status.get(Delivery.Status.DEAD, 0),
            _changelist("notifications.delivery", status="dead", created_at__gte=since.isoformat()),
        ),
        Figure(
            "Deliveries failed (permanent)",
            by_status.get(Delivery.Status.FAILED, 0),
            _changelist("notifications.delivery", status="failed", created_at__gte=since.isoformat()),
        ),
        # These two count rows that went bad today (whenever they were created): by updated_at, and
        # the link filters the same way, so the list shows exactly the rows counted.
        Figure(
            "Webhook messages failed",
            WebhookMessage.objects.filter(status="failed", updated_at__gte=since).count(),
            _changelist("events.webhookmessage", status="failed", updated_at__gte=since.isoformat()),
        ),
        Figure(
            "Tracked tasks dead",
            TaskExecution.objects.filter(status="dead", updated_at__gte=since).count(),
            _changelist("tasks.taskexecution", status="dead", updated_at__gte=since.isoformat()),
        ),
    ]

    task_status = dict(
        TaskExecution.objects.filter(status__in=("queued", "running", "retrying"))
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    board.tasks = [
        Figure(f"Tracked tasks {status}", task_status.get(status, 0), _changelist("tasks.taskexecution", status=status))
        for status in ("running", "queued", "retrying")
    ]

    if with_queues:
        _add_queues(board)
    return board


def _add_queues(board: Dashboard) -> None:
    from django.conf import settings

    from apps.observability.collectors import WAITING_SOURCES, broker_queue_depths, oldest_waiting_ages
    from workers.queues import QUEUE_SPECS

    ages = oldest_waiting_ages(WAITING_SOURCES)
    try:
        depths: dict[str, int] | None = broker_queue_depths(
            settings.CELERY_BROKER_URL,
            [spec.name for spec in QUEUE_SPECS],
            transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        )
    except Exception as exc:  # the page still shows the database's view
        log.warning("queue depth unavailable for the dashboard", error=f"{type(exc).__name__}: {exc}")
        depths = None
        board.queue_error = f"The broker did not answer ({type(exc).__name__})."
    board.queues = [
        {
            "name": spec.name,
            "group": spec.group,
            "purpose": spec.purpose,
            "depth": None if depths is None else depths.get(spec.name, 0),
            "oldest_seconds": round(ages.get(spec.name, 0.0)),
        }
        for spec in QUEUE_SPECS
    ]
