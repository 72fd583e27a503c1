"""A Django Tasks backend (the `django-tasks` backport) that runs `@task` functions on Signalbox's Celery.

    TASKS = {"default": {"BACKEND": "apps.tasks.django_tasks_backend.SignalboxBackend",
                         "QUEUES": ["default", "tasks"], "OPTIONS": {"MAX_RETRIES": 3}}}

Code written against the standard API (`@task`, `.enqueue()`, `.get_result()`, `result.refresh()`)
runs unchanged and gains what that API leaves out: every call is a TaskExecution (polled at
/api/v1/tasks/<result.id>/ by the tenant whose request enqueued it, visible in admin and Flower),
retried with backoff, recovered by the sweeper if its worker dies, and bounded by time limits.

- `queue_name` maps to a Celery queue: "default" -> "tasks", other names must be Signalbox queues
  (OPTIONS["QUEUE_MAP"] adds aliases). `run_after` is supported; priorities are not.
- The execution is recorded in the caller's transaction and published after commit: a rolled-back
  transaction enqueues nothing.
- OPTIONS: MAX_RETRIES (3), RETRY_BACKOFF seconds (5), RETRY_BACKOFF_MAX seconds (600).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

from django.core.files.storage import default_storage
from django.utils.module_loading import import_string
from django_tasks import TaskContext as DjangoTaskContext
from django_tasks import TaskResult, TaskResultStatus
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.base import Task
from django_tasks.base import TaskError as DjangoTaskError
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist
from django_tasks.signals import task_enqueued, task_finished, task_started
from django_tasks.utils import normalize_json
from typing_extensions import ParamSpec

from apps.core import context
from apps.core.retry import RetryPolicy
from apps.tasks.models import Kind, Status, TaskExecution
from apps.tasks.runtime import TaskError
from apps.tasks.services.executions import django_task_enqueue
from apps.tasks.types import Job
from apps.tenancy.models import Tenant
from workers.queues import QUEUE_NAMES

T = TypeVar("T")
P = ParamSpec("P")

_STATUS = {
    Status.QUEUED: TaskResultStatus.READY,
    Status.RETRYING: TaskResultStatus.READY,
    Status.RUNNING: TaskResultStatus.RUNNING,
    Status.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    Status.FAILED: TaskResultStatus.FAILED,
    Status.DEAD: TaskResultStatus.FAILED,
    Status.CANCELLED: TaskResultStatus.FAILED,
}
# Outcomes recorded without a Python exception of the task's own.
_EXCEPTION_OF_CODE = {
    "cancelled": "apps.tasks.runtime.Cancelled",
    "worker_lost": "billiard.exceptions.WorkerLostError",
    "timeout": "billiard.exceptions.TimeLimitExceeded",
}


class SignalboxBackend(BaseTaskBackend):
    supports_defer = True
    supports_get_result = True
    supports_async_task = True
    supports_priority = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.queue_map: dict[str, str] = {"default": "tasks", **self.options.get("QUEUE_MAP", {})}
        self.retry = RetryPolicy(
            max_attempts=int(self.options.get("MAX_RETRIES", 3)) + 1,
            base_seconds=float(self.options.get("RETRY_BACKOFF", 5.0)),
            cap_seconds=float(self.options.get("RETRY_BACKOFF_MAX", 600.0)),
            jitter="equal",
        )

    def celery_queue(self, queue_name: str) -> str:
        return self.queue_map.get(queue_name, queue_name)

    def validate_task(self, task: Task[Any, Any]) -> None:
        super().validate_task(task)
        if self.celery_queue(task.queue_name) not in QUEUE_NAMES:
            raise InvalidTaskError(f"Queue {task.queue_name!r} is not a Signalbox queue (see workers/queues.py).")

    def enqueue(self, task: Task[P, T], args: Any, kwargs: Any) -> TaskResult[T]:
        self.validate_task(task)
        execution = django_task_enqueue(
            tenant=_current_tenant(),
            path=task.module_path,
            args=normalize_json(list(args)),
            kwargs=normalize_json(dict(kwargs)),
            queue=self.celery_queue(task.queue_name),
            max_attempts=self.retry.max_attempts,
            scheduled_at=task.run_after,
        )
        result: TaskResult[T] = self.to_result(task, execution)
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        try:
            pk = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        execution = TaskExecution.objects.filter(pk=pk, kind=Kind.DJANGO).first()
        if execution is None:
            raise TaskResultDoesNotExist(result_id)
        return self.to_result(_task_of(execution), execution)

    def to_result(self, task: Task[Any, Any], execution: TaskExecution) -> TaskResult[Any]:
        status = _STATUS[Status(execution.status)]
        errors = []
        if execution.error_code and execution.status != Status.SUCCEEDED:
            errors.append(
                DjangoTaskError(
                    exception_class_path=execution.error_exception
                    or _EXCEPTION_OF_CODE.get(execution.error_code, "builtins.Exception"),
                    traceback=execution.error_traceback,
                )
            )
        stored = execution.input or {}
        result: TaskResult[Any] = TaskResult(
            task=task,
            id=str(execution.id),
            status=status,
            enqueued_at=execution.created_at,
            started_at=execution.started_at,
            finished_at=execution.finished_at,
            last_attempted_at=execution.attempt_started_at,
            args=stored.get("args", []),
            kwargs=stored.get("kwargs", {}),
            backend=self.alias,
            errors=errors,
            worker_ids=[execution.worker] * execution.attempts,
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", _return_value(execution))
        return result


def _current_tenant() -> Any:
    """The tenant of the request (or task) enqueueing, from the correlation context; None outside one."""
    tenant_id = context.get("tenant")
    return Tenant.objects.filter(pk=tenant_id).first() if tenant_id else None


def _task_of(execution: TaskExecution) -> Task[Any, Any]:
    task = import_string(execution.name)
    if not isinstance(task, Task):
        raise TaskResultDoesNotExist(f"{execution.name} is not a Django task")
    return task


def _return_value(execution: TaskExecution) -> Any:
    if execution.result is None and execution.result_filename == "result.json" and execution.result_file:
        with default_storage.open(execution.result_file) as stored:
            return json.loads(stored.read())
    return execution.result


def django_job(execution: TaskExecution) -> Job:
    """The runner's `Job` for a Django task: call it (with its context if it takes one)."""
    try:
        task = _task_of(execution)
    except (ImportError, TaskResultDoesNotExist):
        return Job(call=_missing(execution.name), retry=RetryPolicy(max_attempts=1, jitter="equal"))
    backend = task.get_backend()
    retry = backend.retry if isinstance(backend, SignalboxBackend) else RetryPolicy(jitter="equal")

    def call(ctx: Any) -> Any:
        args, kwargs = ctx.input.get("args", []), ctx.input.get("kwargs", {})
        running = TaskExecution.objects.get(pk=execution.pk)
        result = SignalboxBackend.to_result(backend, task, running)  # type: ignore[arg-type]
        task_started.send(type(backend), task_result=result)
        try:
            if task.takes_context:
                value = task.call(DjangoTaskContext(task_result=result), *args, **kwargs)  # type: ignore[call-arg]
            else:
                value = task.call(*args, **kwargs)
        except BaseException:
            object.__setattr__(result, "status", TaskResultStatus.FAILED)
            task_finished.send(type(backend), task_result=result)
            raise
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
        task_finished.send(type(backend), task_result=result)
        return value

    return Job(call=call, retry=retry)


def _missing(path: str) -> Any:
    def call(ctx: Any) -> Any:
        raise TaskError("unknown_task", f"The Django task {path} is not installed on the worker.")

    return call
