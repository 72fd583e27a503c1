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
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from rest_framework import serializers

from apps.core.errors import ApplicationError
from apps.core.retry import RetryPolicy
from apps.tasks.jsonschema import serializer_json_schema
from workers.queues import QUEUE_NAMES

if TYPE_CHECKING:
    from apps.tasks.runtime import TaskContext

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

TaskFunction = Callable[["TaskContext", dict[str, Any]], Any]


@dataclass(frozen=True)
class TaskType:
    name: str
    func: TaskFunction
    queue: str
    input_serializer: type[serializers.Serializer[Any]] | None
    retry: RetryPolicy
    soft_time_limit: int
    time_limit: int
    terminable: bool
    result_ttl_days: int | None
    description: str
    celery_task: Any = field(repr=False)

    def validate_input(self, data: Any, *, tenant: Any) -> dict[str, Any]:
        """The input as stored: validated by the type's serializer, rendered back to plain JSON."""
        if self.input_serializer is None:
            if data not in (None, {}):
                raise ApplicationError(
                    "This task takes no input.",
                    code="validation_error",
                    fields={"input": ["This task takes no input."]},
                )
            return {}
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ApplicationError(
                "The input must be a JSON object.", code="validation_error", fields={"input": ["Expected an object."]}
            )
        serializer = self.input_serializer(data=data, context={"tenant": tenant})
        if not serializer.is_valid():
            raise ApplicationError(
                "The task input is invalid; see fields.",
                code="validation_error",
                fields={"input": _plain(serializer.errors)},
            )
        return _json(serializer.data)

    def input_schema(self) -> dict[str, Any]:
        if self.input_serializer is None:
            return {"type": "object", "properties": {}, "additionalProperties": False}
        return serializer_json_schema(self.input_serializer())


def _plain(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {k: _plain(v) for k, v in detail.items()}
    if isinstance(detail, list):
        return [_plain(v) for v in detail]
    return str(detail)


def _json(data: Any) -> dict[str, Any]:
    import json

    from django.core.serializers.json import DjangoJSONEncoder

    return dict(json.loads(json.dumps(data, cls=DjangoJSONEncoder)))


_REGISTRY: dict[str, TaskType] = {}
_loaded = False
_load_lock = threading.Lock()


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
) -> Callable[[TaskFunction], TaskType]:
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

    def decorate(func: TaskFunction) -> TaskType:
        existing = _REGISTRY.get(name)
        if existing is not None:
            if _qualname(existing.func) == _qualname(func):
                return existing  # the same module imported again
            raise ImproperlyConfigured(f"Task name {name!r} is registered twice.")

        def run(self: Any, execution_id: str, dispatch: str) -> None:
            from apps.tasks.runner import execute

            execute(self, execution_id=execution_id, dispatch=dispatch)

        run.__name__ = func.__name__
        run.__qualname__ = func.__qualname__
        run.__module__ = func.__module__
        run.__doc__ = func.__doc__

        from apps.tasks.runner import TrackedCeleryTask

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
        _REGISTRY[name] = task_type
        return task_type

    return decorate


def _qualname(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _ensure_loaded() -> None:
    """Imports every app's `tasks` module once, as the worker's autodiscovery does."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if not _loaded:
            from django.utils.module_loading import autodiscover_modules

            autodiscover_modules("tasks")
            _loaded = True


def get_task_type(name: str) -> TaskType | None:
    _ensure_loaded()
    return _REGISTRY.get(name)


def task_types() -> list[TaskType]:
    _ensure_loaded()
    return sorted(_REGISTRY.values(), key=lambda t: t.name)
