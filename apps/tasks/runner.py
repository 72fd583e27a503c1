"""Runs one attempt of a tracked execution inside a Celery worker, and owns its failure policy.

Claim the row (or drop/defer the message), call the task with a `TaskContext`, then record the
outcome: `succeeded`; `failed` for a `TaskError`, a timeout or an exception outside the type's
`retry_for`; `retrying` with backoff for any other exception while attempts remain, else `dead`;
`cancelled` when the task saw the cancellation. A worker killed mid-task leaves the row `running`
under a lease that stops being renewed; the redelivered message or the sweeper picks it up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Task, current_app
from django.db import InterfaceError, OperationalError

from apps.core import context
from apps.core.retry import RetryPolicy
from apps.observability import metrics
from apps.tasks.conf import tasks_settings
from apps.tasks.models import Kind, Status, TaskExecution
from apps.tasks.registry import get_task_type
from apps.tasks.runtime import Cancelled, Superseded, TaskContext, TaskError, heartbeat
from apps.tasks.services import executions as svc

log = logging.getLogger(__name__)


class TrackedCeleryTask(Task):  # type: ignore[misc]
    """Base class of every tracked task's Celery task: results live in TaskExecution, not the backend."""

    ignore_result = True

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Celery calls this in the worker's parent process when the hard time limit killed the
        # child, which had no chance to record anything.
        if isinstance(exc, TimeLimitExceeded) and kwargs and "execution_id" in kwargs:
            svc.execution_timed_out(execution_id=kwargs["execution_id"], dispatch=kwargs.get("dispatch", ""))


@dataclass(frozen=True)
class Job:
    """What to call for an execution, and how to retry it."""

    call: Callable[[TaskContext], Any]
    retry: RetryPolicy
    result_ttl_days: int | None = None
    soft_time_limit: int | None = None


def job_for(execution: TaskExecution) -> Job | None:
    if execution.kind == Kind.TASK:
        task_type = get_task_type(execution.name)
        if task_type is None:
            return None
        return Job(
            call=lambda ctx: task_type.func(ctx, ctx.input),
            retry=task_type.retry,
            result_ttl_days=task_type.result_ttl_days,
            soft_time_limit=task_type.soft_time_limit,
        )
    if execution.kind == Kind.DJANGO:
        from apps.tasks.django_tasks_backend import django_job

        return django_job(execution)
    return None


def execute(celery_task: Task, *, execution_id: str, dispatch: str) -> None:
    request = celery_task.request
    try:
        claim = svc.execution_claim(
            execution_id=execution_id, dispatch=dispatch, worker=request.hostname or "", celery_task_id=request.id or ""
        )
    except (OperationalError, InterfaceError) as exc:
        # The database blinked before anything ran: the same message again shortly (past 5 minutes
        # of this, the sweeper republishes the execution).
        raise celery_task.retry(exc=exc, countdown=5, max_retries=60) from exc
    if claim.defer_seconds is not None:
        _defer(celery_task, execution_id, claim.defer_seconds)
        return
    execution = claim.execution
    if execution is None:
        log.info("task message dropped", extra={"execution_id": execution_id, "reason": claim.reason})
        return
    job = job_for(execution)
    if job is None:
        svc.execution_end(
            execution=execution,
            status=Status.FAILED,
            code="unknown_task",
            message="This task type is not installed on the worker.",
        )
        return
    with context.bound(execution_id=str(execution.id), tenant=str(execution.tenant_id or "") or None):
        _run(execution, job)


def _defer(celery_task: Task, execution_id: str, seconds: float) -> None:
    """Sends the same message again later (same dispatch token): the row is not ready for it yet."""
    queue = TaskExecution.objects.filter(pk=execution_id).values_list("queue", flat=True).first()
    current_app.send_task(
        celery_task.name,
        kwargs=dict(celery_task.request.kwargs or {}),
        queue=queue or None,
        countdown=min(seconds, tasks_settings().countdown_max_seconds),
        headers={"signalbox_execution_id": execution_id},
    )


def _run(execution: TaskExecution, job: Job) -> None:
    ctx = TaskContext(execution)
    heartbeat.watch(execution.id, execution.dispatch)
    started = time.monotonic()
    try:
        value = job.call(ctx)
        try:
            result = svc.to_json(value)
        except (TypeError, ValueError) as exc:
            raise TaskError("invalid_result", "The task returned a result that cannot be stored as JSON.") from exc
        svc.execution_succeed(
            execution=execution,
            value=result,
            progress=(ctx.current, ctx.total, ctx.message),
            file=ctx.file,
            ttl_days=job.result_ttl_days,
        )
    except Superseded:
        ctx.discard_file()
        log.warning("attempt superseded; stopping", extra={"execution_id": str(execution.id)})
    except Cancelled:
        ctx.discard_file()
        svc.execution_end(
            execution=execution, status=Status.CANCELLED, code="cancelled", message="Cancelled by request."
        )
    except TaskError as exc:
        ctx.discard_file()
        svc.execution_end(
            execution=execution, status=Status.FAILED, code=exc.code, message=exc.message, exc=exc,
            ttl_days=job.result_ttl_days,
        )  # fmt: skip
    except SoftTimeLimitExceeded as exc:
        ctx.discard_file()
        limit = f" of {job.soft_time_limit}s" if job.soft_time_limit else ""
        svc.execution_end(
            execution=execution,
            status=Status.FAILED,
            code="timeout",
            message=f"The task exceeded its time limit{limit}.",
            exc=exc,
            ttl_days=job.result_ttl_days,
        )
    except Exception as exc:
        ctx.discard_file()
        _failed_unexpectedly(execution, job, exc)
    finally:
        heartbeat.clear()
        metrics.TASK_DURATION.labels(name=execution.name).observe(time.monotonic() - started)


def _failed_unexpectedly(execution: TaskExecution, job: Job, exc: Exception) -> None:
    attempts, most = execution.attempts, execution.max_attempts
    retryable = isinstance(exc, job.retry.retry_for)
    log.warning(
        "tracked task raised",
        exc_info=exc,
        extra={"execution_id": str(execution.id), "task": execution.name, "attempt": attempts},
    )
    if retryable and attempts < most:
        svc.execution_retry_later(
            execution=execution,
            delay=job.retry.delay(attempts),
            code="internal_error",
            message=f"{svc.GENERIC_FAILURE} Retrying (attempt {attempts} of {most} failed).",
            exc=exc,
        )
    elif retryable:
        svc.execution_end(
            execution=execution,
            status=Status.DEAD,
            code="internal_error",
            message=f"{svc.GENERIC_FAILURE} Gave up after {attempts} attempt(s).",
            exc=exc,
        )
    else:
        svc.execution_end(
            execution=execution, status=Status.FAILED, code="internal_error", message=svc.GENERIC_FAILURE, exc=exc,
            ttl_days=job.result_ttl_days,
        )  # fmt: skip
