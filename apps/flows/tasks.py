"""Celery tasks of the flow engine: thin wrappers over services/engine.py.

Names are permanent (pinned in tests/flows/test_tasks.py). `advance` runs on the notification
queues (published on the notification's priority queue; `notifications.default` otherwise); the
dispatcher and the sweeper run on `maintenance`, driven by beat. None retries through Celery:
a run lost with its worker is a row with an expired lease, given back by the sweeper.
"""

from __future__ import annotations

from celery import shared_task

from apps.flows.services import engine


@shared_task(name="signalbox.flows.advance", queue="notifications.default", ignore_result=True)
def advance() -> dict[str, int]:
    """Runs due steps in chunks until none is due (or its time budget is spent)."""
    result = engine.flows_advance()
    return {"claimed": result.claimed, "chunks": result.chunks}


@shared_task(name="signalbox.flows.dispatch_due", queue="maintenance", ignore_result=True)
def dispatch_due() -> int:
    return engine.flows_dispatch_due()


@shared_task(name="signalbox.flows.sweep", queue="maintenance", ignore_result=True)
def sweep() -> dict[str, int]:
    result = engine.flows_sweep()
    return {"leases": result.leases, "cancelled": result.cancelled, "finished": result.finished}
