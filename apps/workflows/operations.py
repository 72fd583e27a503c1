"""What the workflows app hands the platform's upkeep: its retention policy and periodic jobs, the
intents the queue metrics watch, and its figure on the operations dashboard.

Registered by `WorkflowsConfig.ready()`; core and observability know none of it. Its policy
(`transition_intents`) runs in its own `signalbox.maintenance.purge_transition_intents` job.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from apps.core.periodic import PeriodicJob
from apps.observability.collectors import WaitingSource
from apps.observability.dashboard import Figure, changelist
from apps.workflows.models import IntentStatus, TransitionIntent

PERIODIC_JOBS = (
    PeriodicJob(
        name="workflows: sweep pending transition intents",
        task="signalbox.workflows.sweep",
        every_seconds=60,
        queue="transitions",
        description="Republishes transition intents committed but never applied.",
    ),
    PeriodicJob(
        name="workflows: purge finished transition intents",
        task="signalbox.maintenance.purge_transition_intents",
        every_seconds=3600,
        description="Deletes finished transition intents past retention; the transition log is kept.",
    ),
)

WAITING_SOURCES = (
    WaitingSource(
        model="workflows.TransitionIntent",
        waiting=lambda now: Q(status=IntentStatus.PENDING),
        since="created_at",
        queue="transitions",
    ),
)


def intents_today(since: datetime) -> list[Figure]:
    return [
        Figure(
            "Transition intents",
            TransitionIntent.objects.filter(created_at__gte=since).count(),
            changelist("workflows.transitionintent", created_at__gte=since.isoformat()),
        )
    ]
