"""What a tracked task type is (`TaskType`, with the shared `apps.core.retry.RetryPolicy`), the
registry of them, and the `Job` the runner calls: plain data that the services, the runner and
the Django Tasks backend share.

`@tracked_task` (apps/tasks/registry.py) fills the registry; everything else reads it here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import autodiscover_modules
from rest_framework import serializers

from apps.core.errors import ApplicationError
from apps.core.retry import RetryPolicy
from apps.tasks.jsonschema import serializer_json_schema

# `func(ctx: TaskContext, data)`; typed loosely here, since the context (apps/tasks/runtime.py) writes
# through the services that read this module.
TaskFunction = Callable[[Any, dict[str, Any]], Any]


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
    return dict(json.loads(json.dumps(data, cls=DjangoJSONEncoder)))


_REGISTRY: dict[str, TaskType] = {}
_loaded = False
_load_lock = threading.Lock()


def register(task_type: TaskType) -> TaskType:
    """Adds a task type (`@tracked_task` checked its name with `registered` first)."""
    _REGISTRY[task_type.name] = task_type
    return task_type


def registered(name: str, func: TaskFunction) -> TaskType | None:
    """The type already registered for this very function (a module imported twice), else None."""
    existing = _REGISTRY.get(name)
    if existing is not None and _qualname(existing.func) == _qualname(func):
        return existing
    if existing is not None:
        raise ImproperlyConfigured(f"Task name {name!r} is registered twice.")
    return None


def _qualname(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _ensure_loaded() -> None:
    """Imports every app's `tasks` module once, as the worker's autodiscovery does."""
    global _loaded
    if _loaded:
        return
    with _load_lock:
        if not _loaded:
            autodiscover_modules("tasks")
            _loaded = True


def get_task_type(name: str) -> TaskType | None:
    _ensure_loaded()
    return _REGISTRY.get(name)


def task_types() -> list[TaskType]:
    _ensure_loaded()
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


@dataclass(frozen=True)
class Job:
    """What to call for an execution, and how to retry it."""

    call: Callable[[Any], Any]
    retry: RetryPolicy
    result_ttl_days: int | None = None
    soft_time_limit: int | None = None
