"""Celery tasks of the tasks app: the upkeep jobs, the schedule dispatcher and the Django Tasks runner.

Importing this module (Celery autodiscovery in the worker, the registry in the web process) also
registers the test-only task types when `SIGNALBOX_TEST_TASKS=1`. The task types Signalbox ships
live in the apps whose data they read (`apps/notifications/jobs/`).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.tasks import builtin  # noqa: F401  (registers the task types the tasks app ships)
from apps.tasks.conf import tasks_settings
from apps.tasks.runner import TrackedCeleryTask, execute
from apps.tasks.services.maintenance import executions_purge_expired, executions_sweep
from apps.tasks.services.schedules import schedule_fire

if tasks_settings().test_tasks:
    from apps.tasks import testing  # noqa: F401  (test-only task types; see apps/tasks/testing.py)


@shared_task(name="signalbox.tasks.sweep_stale", queue="maintenance", ignore_result=True)
def sweep_stale() -> dict[str, int]:
    """Publishes executions that never reached the broker, requeues those whose worker died."""
    return executions_sweep().as_dict()


@shared_task(name="signalbox.tasks.purge_expired", queue="maintenance", ignore_result=True)
def purge_expired() -> int:
    """Deletes finished executions (and their files) past their `delete_at`."""
    return executions_purge_expired()


@shared_task(name="signalbox.tasks.run_schedule", queue="maintenance", ignore_result=True)
def run_schedule(schedule_id: str) -> str | None:
    """Called by beat for each tick of a tenant's schedule: creates (and starts) that tick's execution."""
    execution = schedule_fire(schedule_id=schedule_id)
    return str(execution.id) if execution is not None else None


@shared_task(
    name="signalbox.tasks.run_django_task", bind=True, base=TrackedCeleryTask, queue="tasks", ignore_result=True
)
def run_django_task(self: Any, execution_id: str, dispatch: str, task_path: str = "") -> None:
    """Runs one Django Tasks (`@task`) call enqueued through the Signalbox backend."""
    execute(self, execution_id=execution_id, dispatch=dispatch)
