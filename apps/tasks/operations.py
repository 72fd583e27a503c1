"""What the tasks app hands the platform's upkeep: its periodic jobs, the executions the queue
metrics watch, and its figures on the operations dashboard.

Registered by `TasksConfig.ready()`; core and observability know none of it. Task executions are
not a `RetentionPolicy`: each one is told its `expires_at` when it finishes, and their files must go
with them, so `signalbox.tasks.purge_expired` purges them (apps/tasks/services/maintenance.py).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Q

from apps.core.periodic import PeriodicJob
from apps.observability.collectors import WaitingSource
from apps.observability.dashboard import Figure, changelist, day_of
from apps.tasks.models import Status, TaskExecution

PERIODIC_JOBS = (
    PeriodicJob(
        name="tasks: sweep stale executions",
        task="signalbox.tasks.sweep_stale",
        every_seconds=60,
        description="Publishes tracked tasks that never reached the broker; requeues those whose worker died.",
    ),
    PeriodicJob(
        name="tasks: purge expired executions",
        task="signalbox.tasks.purge_expired",
        every_seconds=3600,
        description="Deletes finished task executions and their files past their delete_at.",
    ),
)

WAITING_SOURCES = (
    # A tracked task due to run (first attempt or retry).
    WaitingSource(
        model="tasks.TaskExecution",
        waiting=lambda now: Q(status__in=(Status.QUEUED, Status.RETRYING), run_after__lte=now),
        since="run_after",
        queue_field="queue",
        queue_by_value={"": "tasks"},
    ),
)

SHOWN_IN_PROGRESS = (Status.RUNNING, Status.QUEUED, Status.RETRYING)


def intents_today(since: datetime) -> list[Figure]:
    return [
        Figure(
            "Tracked tasks",
            TaskExecution.objects.filter(created_at__gte=since).count(),
            changelist("tasks.taskexecution", **day_of(since)),
        )
    ]


def dead_letters_today(since: datetime) -> list[Figure]:
    # Counts rows that went bad today (whenever they were created), as the link filters them.
    return [
        Figure(
            "Tracked tasks dead",
            TaskExecution.objects.filter(status=Status.DEAD, updated_at__gte=since).count(),
            changelist("tasks.taskexecution", status="dead", updated_at__gte=since.isoformat()),
        )
    ]


def in_progress(since: datetime) -> list[Figure]:
    """Tracked tasks running, queued or retrying now (whenever they started)."""
    by_status = dict(
        TaskExecution.objects.filter(status__in=SHOWN_IN_PROGRESS)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [
        Figure(f"Tracked tasks {status}", by_status.get(status, 0), changelist("tasks.taskexecution", status=status))
        for status in (choice.value for choice in SHOWN_IN_PROGRESS)
    ]
