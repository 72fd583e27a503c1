"""The task registry: `@tracked_task` turns a function into a task type clients can start through the API.

    @tracked_task(name="signalbox.exports.deliveries_csv", queue="tasks", input=DeliveriesCsvInput,
                  max_retries=3, soft_time_limit=600, time_limit=660)
    def deliveries_csv(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
        ...

The function receives a `TaskContext` (progress, cancellation, files) and the validated input as
JSON; what it returns is the execution's result. Names are permanent (pinned by a test): a
renamed task strands every message and schedule that uses the old name.

Task types live in each app's `tasks.py` (or a module it imports), so the worker registers them
through Celery's autodiscovery; the web process loads the same modules on first use of the registry.
What a task type is, and the registry itself, are in `apps/tasks/types.py`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework import serializers

from apps.tasks.runner import TrackedCeleryTask, execute
from apps.tasks.runtime import TaskContext
from apps.tasks.types import RetryPolicy, TaskType, get_task_type, register, registered, task_types
from workers.queues import QUEUE_NAMES

__all__ = ["RetryPolicy", "TaskType", "get_task_type", "task_types", "tracked_task"]

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

TrackedFunction = Callable[[TaskContext, dict[str, Any]], Any]


def tracked_task(
    *,
    name: str,
    queue: str = "tasks",
    input: type[serializers.Serializer[Any]] | None = None,
    max_retries: int = 3,
    retry_backoff: float = 5.0,
    retry_backoff_max: float = 600.0,
    retry_jitter: bool = True,
    retry_for: tuple[type[BaseException], ...] = (Exception,),
    soft_time_limit: int | None = None,
    time_limit: int | None = None,
    terminable: bool = False,
    result_ttl_days: int | None = None,
    description: str = "",
) -> Callable[[TrackedFunction], TaskType]:
    """Registers `func(ctx, data)` as a tracked task type and as a Celery task of the same name.

    `terminable=True` declares that killing the process mid-run is safe, which lets a client
    cancel with `{"terminate": true}` (Celery `revoke(terminate=True)`) instead of waiting for
    the next `ctx.check_cancelled()`.
    """
    if not NAME_PATTERN.match(name):
        raise ImproperlyConfigured(f"Task name {name!r} must be dotted lowercase, e.g. signalbox.exports.csv.")
    if queue not in QUEUE_NAMES:
        raise ImproperlyConfigured(f"Task {name}: unknown queue {queue!r} (see workers/queues.py).")
    soft = int(soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT)
    hard = int(time_limit or max(settings.CELERY_TASK_TIME_LIMIT, soft + 30))
    visibility = int(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600))  # type: ignore[call-overload]
    if not soft < hard < visibility:
        raise ImproperlyConfigured(
            f"Task {name}: need soft_time_limit < time_limit < the broker visibility timeout ({visibility}s)."
        )
    if max_retries < 0:
        raise ImproperlyConfigured(f"Task {name}: max_retries must be >= 0.")

    def decorate(func: TrackedFunction) -> TaskType:
        existing = registered(name, func)
        if existing is not None:
            return existing  # the same module imported again

        def run(self: Any, execution_id: str, dispatch: str) -> None:
            execute(self, execution_id=execution_id, dispatch=dispatch)

        run.__name__ = func.__name__
        run.__qualname__ = func.__qualname__
        run.__module__ = func.__module__
        run.__doc__ = func.__doc__

        celery_task = shared_task(
            bind=True,
            base=TrackedCeleryTask,
            name=name,
            queue=queue,
            soft_time_limit=soft,
            time_limit=hard,
            ignore_result=True,
        )(run)
        task_type = TaskType(
            name=name,
            func=func,
            queue=queue,
            input_serializer=input,
            retry=RetryPolicy(
                max_attempts=max_retries + 1,
                base_seconds=retry_backoff,
                cap_seconds=retry_backoff_max,
                jitter="equal" if retry_jitter else "none",
                retry_for=retry_for,
            ),
            soft_time_limit=soft,
            time_limit=hard,
            terminable=terminable,
            result_ttl_days=result_ttl_days,
            description=description or (func.__doc__ or "").strip().split("\n")[0],
            celery_task=celery_task,
        )
        return register(task_type)

    return decorate
