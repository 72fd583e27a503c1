"""Writes on TaskExecution: start, publish, claim, finish, cancel, retry, and the intent API for other apps.

Every state change is a compare-and-set UPDATE (`filter(id=…, status=…, dispatch=…).update(…)`)
that bumps `version`; a caller that loses the race gets `False`/`None` and does nothing more.
Messages are published after commit with a fresh `dispatch` token, and only the message holding
the row's current token may claim it, so duplicates (a sweeper republish, a redelivery) are dropped.
"""

from __future__ import annotations

import json
import logging
import traceback as tb
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict, Unprocessable
from apps.core.live import live_publish_to_listeners
from apps.core.ports import event_bus
from apps.core.publish import publish_on_commit
from apps.core.retention import tenant_retention_days
from apps.observability import metrics
from apps.observability.audit import audit_record
from apps.tasks.conf import tasks_settings
from apps.tasks.models import ACTIVE, FINISHED, WAITING, Kind, Schedule, Status, TaskExecution
from apps.tasks.types import TaskType, get_task_type
from apps.tenancy.models import Tenant

log = logging.getLogger(__name__)

DJANGO_TASK_RUNNER = "signalbox.tasks.run_django_task"
# A message may arrive this early (clock skew between machines) and still run.
EARLY_TOLERANCE = timedelta(seconds=2)

GENERIC_FAILURE = "The task failed unexpectedly."


def _bump(now: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """The fields of a client-visible change: they move the ETag."""
    return {**fields, "version": F("version") + 1, "updated_at": now or timezone.now()}


def _delete_at(status: str, finished_at: datetime, ttl_days: int | None = None, *, tenant: Any) -> datetime:
    """When a finished execution expires. The tenant's `retention_days["task_dead"]` (dead letters)
    or `["task_results"]` (every other final status) wins, read and validated like every retention
    setting; else the task type's `result_ttl_days`, else `DEAD_TTL_DAYS` / `RESULT_TTL_DAYS`."""
    cfg = tasks_settings()
    if status == Status.DEAD:
        days = tenant_retention_days(tenant, "task_dead") or cfg.dead_ttl_days
    else:
        days = tenant_retention_days(tenant, "task_results") or ttl_days or cfg.result_ttl_days
    return finished_at + timedelta(days=days)


def _tenant_of(execution_id: Any) -> Any:
    """The execution's tenant (None for a platform execution), for an update that has only the id."""
    return Tenant.objects.filter(pk__in=TaskExecution.objects.filter(pk=execution_id).values("tenant_id")).first()


def _count_finished(name: str, status: str) -> None:
    metrics.TASK_EXECUTIONS.labels(name=name, status=status).inc()
    if status == Status.DEAD:  # beside dead deliveries and webhook messages, for the dead-letter alerts
        metrics.DEAD_LETTERS.labels(kind="task", channel="task").inc()


ANNOUNCED = (Status.SUCCEEDED, Status.FAILED, Status.DEAD)


def execution_live_message(row: TaskExecution) -> dict[str, Any]:
    """The `task.status` message of the live task stream (docs/realtime.md): numbered by `version`."""
    return {
        "type": "task.status",
        "id": row.version,
        "data": {
            "id": str(row.id),
            "name": row.name,
            "status": row.status,
            "progress": {
                "current": row.progress_current,
                "total": row.progress_total,
                "percent": row.percent,
                "message": row.progress_message,
            },
            "error": {"code": row.error_code, "message": row.error_message} if row.error_code else None,
            "updated_at": row.updated_at.isoformat(),
        },
    }


def execution_live_changed(*, execution_id: Any) -> None:
    """Pushes the execution's new state to the live streams following it (docs/realtime.md) once
    the change commits: who follows is asked then, and the row read then (a committed state,
    ordered by `version`; a stream drops one not newer than it has). Free when nobody follows."""
    group = f"task.{execution_id}"

    def build(_: set[str]) -> list[tuple[str, dict[str, Any]]]:
        row = TaskExecution.objects.filter(pk=execution_id).first()
        return [(group, execution_live_message(row))] if row is not None else []

    live_publish_to_listeners([group], build)


def _announce(execution: TaskExecution, status: str) -> None:
    """Puts `task.succeeded`, `task.failed` or `task.dead` on the event bus (free until a rule or a
    webhook endpoint listens), so tenants can act on their jobs' outcomes like on any event."""
    execution_live_changed(execution_id=execution.id)
    if status not in ANNOUNCED:
        return
    event_type = f"task.{status}"
    bus = event_bus()  # the events app's, installed at start-up: it sits above this one (it starts tasks)
    if execution.tenant_id is None or not bus.listeners_of(execution.tenant_id).observe(event_type):
        return
    bus.emit(
        tenant=execution.tenant_id,
        type=event_type,
        subject=("task", str(execution.id)),
        payload={"id": str(execution.id), "name": execution.name, "status": status},
        only_if_observed=False,
        depth=bus.depth_after_action(execution.idempotency_key),
    )


# --- publishing --------------------------------------------------------------------------------


def _celery_name(execution: TaskExecution) -> str:
    return DJANGO_TASK_RUNNER if execution.kind == Kind.DJANGO else execution.name


def execution_publish_on_commit(execution: TaskExecution, *, countdown: float | None = None) -> None:
    """Sends the execution's message after the current transaction commits (at once outside one).

    The message carries the execution id (visible in Flower) and the current dispatch token;
    `published_at` is set once the broker took it. A crash in between leaves `published_at`
    empty and the sweeper publishes it again.
    """
    execution_id, dispatch = execution.id, execution.dispatch
    kwargs: dict[str, Any] = {"execution_id": str(execution_id), "dispatch": str(dispatch)}
    if execution.kind == Kind.DJANGO:
        kwargs["task_path"] = execution.name  # readable in Flower beside the generic runner's name

    def published() -> None:
        TaskExecution.objects.filter(pk=execution_id, dispatch=dispatch).update(published_at=timezone.now())

    publish_on_commit(
        _celery_name(execution),
        kwargs=kwargs,
        queue=execution.queue,
        countdown=countdown if countdown and countdown > 0 else None,
        headers={"signalbox_execution_id": str(execution_id)},
        on_published=published,
    )


def _schedule_publish(execution: TaskExecution, now: datetime) -> None:
    """Publishes now, or with a countdown if due soon; a later start waits for the sweeper."""
    wait = (execution.run_after - now).total_seconds()
    if wait <= tasks_settings().countdown_max_seconds:
        execution_publish_on_commit(execution, countdown=wait)


# --- starting ----------------------------------------------------------------------------------


def _create(
    *,
    tenant: Any,
    kind: str,
    name: str,
    data: dict[str, Any],
    queue: str,
    max_attempts: int,
    actor: Actor | None,
    idempotency_key: str | None = None,
    scheduled_at: datetime | None = None,
    schedule: Schedule | None = None,
    scheduled_for: datetime | None = None,
    retry_of: TaskExecution | None = None,
    status: str = Status.QUEUED,
) -> TaskExecution:
    now = timezone.now()
    actor_type, actor_id = (actor or SYSTEM).record
    return TaskExecution.objects.create(
        tenant=tenant,
        kind=kind,
        name=name,
        input=data,
        queue=queue,
        status=status,
        max_attempts=max_attempts,
        created_at=now,
        updated_at=now,
        scheduled_at=scheduled_at,
        run_after=max(now, scheduled_at) if scheduled_at else now,
        actor_type=actor_type,
        actor_id=actor_id[:200],
        idempotency_key=idempotency_key,
        schedule=schedule,
        scheduled_for=scheduled_for,
        retry_of=retry_of,
    )


def require_task_type(name: str) -> TaskType:
    task_type = get_task_type(name)
    if task_type is None:
        raise Unprocessable(
            f"No task named {name!r}; see GET /api/v1/task-types/.",
            code="unknown_task",
            fields={"name": [f"Unknown task {name!r}."]},
        )
    return task_type


def task_start(
    *,
    tenant: Any,
    name: str,
    input: dict[str, Any] | None,
    actor: Actor | None = None,
    idempotency_key: str | None = None,
    scheduled_at: datetime | None = None,
    schedule: Schedule | None = None,
    scheduled_for: datetime | None = None,
) -> TaskExecution:
    """Validates the input, records a queued execution and publishes it after commit.

    Nothing is queued if the input is invalid (400 `validation_error`, fields under `input`).
    With an `idempotency_key`, a repeat with the same name and input returns the first
    execution; with a different one it is refused (422 `idempotency_key_reused`).
    """
    task_type = require_task_type(name)
    data = task_type.validate_input(input, tenant=tenant)
    if idempotency_key:
        existing = TaskExecution.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _same_start(existing, name, data)
    try:
        with transaction.atomic():
            execution = _create(
                tenant=tenant,
                kind=Kind.TASK,
                name=name,
                data=data,
                queue=task_type.queue,
                max_attempts=task_type.retry.max_attempts,
                actor=actor,
                idempotency_key=idempotency_key,
                scheduled_at=scheduled_at,
                schedule=schedule,
                scheduled_for=scheduled_for,
            )
            _schedule_publish(execution, execution.created_at)
    except IntegrityError:
        if not idempotency_key:
            raise
        # A concurrent start with the same key committed first.
        return _same_start(TaskExecution.objects.get(tenant=tenant, idempotency_key=idempotency_key), name, data)
    metrics.INTENTS.labels(kind="task").inc()
    return execution


def _same_start(existing: TaskExecution, name: str, data: dict[str, Any]) -> TaskExecution:
    if existing.name != name or existing.input != data:
        raise Unprocessable("This idempotency key started a different task.", code="idempotency_key_reused")
    return existing


def django_task_enqueue(
    *,
    tenant: Any,
    path: str,
    args: list[Any],
    kwargs: dict[str, Any],
    queue: str,
    max_attempts: int,
    scheduled_at: datetime | None,
    actor: Actor | None = None,
) -> TaskExecution:
    """Records and publishes a Django Tasks (`@task`) call; used by the Signalbox backend."""
    execution = _create(
        tenant=tenant,
        kind=Kind.DJANGO,
        name=path,
        data={"args": args, "kwargs": kwargs},
        queue=queue,
        max_attempts=max_attempts,
        actor=actor,
        scheduled_at=scheduled_at,
    )
    _schedule_publish(execution, execution.created_at)
    return execution


# --- the worker side: claim and finish -------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    execution: TaskExecution | None = None
    defer_seconds: float | None = None
    reason: str = ""


def execution_claim(*, execution_id: str, dispatch: str, worker: str, celery_task_id: str) -> Claim:
    """Takes a queued or retrying execution for this message, or one whose previous worker died.

    A message whose dispatch token is not the row's current one is stale (dropped). A message for
    a row still `running` under a live lease is a redelivery after a worker was lost: it is
    deferred until the lease lapses, then takes over, counting the lost attempt.
    """
    now = timezone.now()
    row = (
        TaskExecution.objects.filter(pk=execution_id)
        .values(
            "status", "dispatch", "run_after", "lease_expires_at", "attempts", "max_attempts", "cancel_requested_at"
        )
        .first()
    )
    if row is None:
        return Claim(reason="missing")
    if str(row["dispatch"]) != dispatch:
        return Claim(reason="superseded")
    lease = now + timedelta(seconds=tasks_settings().lease_seconds)
    claimed = _bump(
        now,
        status=Status.RUNNING,
        attempts=F("attempts") + 1,
        started_at=Coalesce(F("started_at"), now),
        attempt_started_at=now,
        lease_expires_at=lease,
        worker=worker[:255],
        celery_task_id=celery_task_id[:255],
    )
    mine = TaskExecution.objects.filter(pk=execution_id, dispatch=dispatch)
    status = row["status"]
    if status in WAITING:
        if row["run_after"] > now + EARLY_TOLERANCE:
            return Claim(defer_seconds=(row["run_after"] - now).total_seconds())
        updated = mine.filter(status__in=WAITING).update(**claimed)
    elif status == Status.RUNNING:
        expires = row["lease_expires_at"]
        if expires is not None and expires > now:
            return Claim(defer_seconds=(expires - now).total_seconds() + 1)
        if row["cancel_requested_at"] is not None or row["attempts"] >= row["max_attempts"]:
            lost_execution_end(execution_id=execution_id, dispatch=dispatch, now=now)
            return Claim(reason="lost_and_ended")
        # A new token for the new attempt: should the old one still be alive after all (a heartbeat
        # lost to a database blip, not a dead process), its next write finds itself superseded.
        updated = mine.filter(status=Status.RUNNING, lease_expires_at__lte=now).update(**claimed, dispatch=uuid.uuid4())
    else:
        return Claim(reason=status)
    if updated != 1:
        return Claim(reason="raced")
    execution_live_changed(execution_id=execution_id)
    return Claim(execution=TaskExecution.objects.select_related("tenant").get(pk=execution_id))


def to_json(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def execution_succeed(
    *,
    execution: TaskExecution,
    value: Any,
    progress: tuple[int, int | None, str],
    file: tuple[str, str, str, int] | None,
    ttl_days: int | None,
) -> bool:
    """Records the result (inline, or as a JSON file when large) and ends the attempt `succeeded`."""
    now = timezone.now()
    result = to_json(value)
    encoded = json.dumps(result).encode()
    stored_file = file
    if len(encoded) > tasks_settings().result_inline_max_bytes:
        if file is None:
            path = default_storage.save(
                f"tasks/{execution.tenant_id or 'platform'}/{execution.id}/result.json", ContentFile(encoded)
            )
            stored_file = (path, "result.json", "application/json", len(encoded))
            result = None
        else:
            result = {"truncated": True, "size": len(encoded)}
    current, total, message = progress
    fields = _bump(
        now,
        status=Status.SUCCEEDED,
        result=result,
        progress_current=current,
        progress_total=total,
        progress_message=message,
        finished_at=now,
        lease_expires_at=None,
        delete_at=_delete_at(Status.SUCCEEDED, now, ttl_days, tenant=execution.tenant),
        error_code="",
        error_message="",
        error_exception="",
        error_traceback="",
    )
    if stored_file is not None:
        path, filename, content_type, size = stored_file
        fields.update(result_file=path, result_filename=filename, result_content_type=content_type, result_size=size)
    updated = TaskExecution.objects.filter(pk=execution.id, dispatch=execution.dispatch, status=Status.RUNNING).update(
        **fields
    )
    if updated != 1:
        if stored_file is not None:
            default_storage.delete(stored_file[0])
        return False
    _count_finished(execution.name, Status.SUCCEEDED)
    _announce(execution, Status.SUCCEEDED)
    return True


def execution_end(
    *,
    execution: TaskExecution,
    status: str,
    code: str,
    message: str,
    exc: BaseException | None = None,
    ttl_days: int | None = None,
) -> bool:
    """Ends the running attempt `failed`, `dead` or `cancelled` with a client-facing code and message."""
    now = timezone.now()
    updated = TaskExecution.objects.filter(pk=execution.id, dispatch=execution.dispatch, status=Status.RUNNING).update(
        **_bump(
            now,
            status=status,
            finished_at=now,
            lease_expires_at=None,
            delete_at=_delete_at(status, now, ttl_days, tenant=execution.tenant),
            **_error_fields(code, message, exc),
        )
    )
    if updated == 1:
        _count_finished(execution.name, status)
        _announce(execution, status)
    return updated == 1


def _error_fields(code: str, message: str, exc: BaseException | None) -> dict[str, Any]:
    if code == "":
        return {"error_code": "", "error_message": "", "error_exception": "", "error_traceback": ""}
    return {
        "error_code": code[:64],
        "error_message": message,
        "error_exception": f"{type(exc).__module__}.{type(exc).__qualname__}"[:300] if exc else "",
        "error_traceback": "".join(tb.format_exception(exc)) if exc else "",
    }


def execution_retry_later(
    *, execution: TaskExecution, delay: float, code: str, message: str, exc: BaseException | None
) -> bool:
    """Ends the attempt `retrying`: a new dispatch token, due after `delay` seconds.

    Short waits ride on a Celery countdown; waits beyond `COUNTDOWN_MAX_SECONDS` are left in
    `run_after` for the sweeper, since on Redis an ETA past the visibility timeout is redelivered.
    """
    now = timezone.now()
    dispatch = uuid.uuid4()
    run_after = now + timedelta(seconds=delay)
    updated = TaskExecution.objects.filter(pk=execution.id, dispatch=execution.dispatch, status=Status.RUNNING).update(
        **_bump(
            now,
            status=Status.RETRYING,
            dispatch=dispatch,
            run_after=run_after,
            published_at=None,
            lease_expires_at=None,
            **_error_fields(code, message, exc),
        )
    )
    if updated != 1:
        return False
    execution.dispatch, execution.run_after = dispatch, run_after
    _schedule_publish(execution, now)
    execution_live_changed(execution_id=execution.id)
    return True


def lost_execution_end(*, execution_id: Any, dispatch: Any, now: datetime) -> None:
    """A running execution whose worker is gone and which may not run again: cancelled or dead."""
    row = TaskExecution.objects.filter(pk=execution_id, dispatch=dispatch, status=Status.RUNNING).first()
    if row is None:
        return
    if row.cancel_requested_at is not None:
        execution_end(execution=row, status=Status.CANCELLED, code="cancelled", message="Cancelled by request.")
    else:
        execution_end(
            execution=row,
            status=Status.DEAD,
            code="worker_lost",
            message=f"The worker running this task was lost {row.attempts} time(s); it will not be retried.",
        )


def execution_requeue_lost(*, execution: TaskExecution, now: datetime) -> bool:
    """Puts a running execution whose lease lapsed (its worker died) back on its queue as `retrying`."""
    if execution.cancel_requested_at is not None or execution.attempts >= execution.max_attempts:
        lost_execution_end(execution_id=execution.id, dispatch=execution.dispatch, now=now)
        return False
    dispatch = uuid.uuid4()
    updated = TaskExecution.objects.filter(
        pk=execution.id, dispatch=execution.dispatch, status=Status.RUNNING, lease_expires_at__lt=now
    ).update(
        **_bump(
            now,
            status=Status.RETRYING,
            dispatch=dispatch,
            run_after=now,
            published_at=None,
            lease_expires_at=None,
            error_code="worker_lost",
            error_message="The worker running this task was lost; it will be retried.",
        )
    )
    if updated != 1:
        return False
    execution.dispatch, execution.run_after = dispatch, now
    execution_publish_on_commit(execution)
    return True


def execution_timed_out(*, execution_id: str, dispatch: str) -> None:
    """The hard time limit killed the attempt (called in the worker's parent process)."""
    row = TaskExecution.objects.filter(pk=execution_id, dispatch=dispatch, status=Status.RUNNING).first()
    if row is not None:
        execution_end(execution=row, status=Status.FAILED, code="timeout", message="The task exceeded its time limit.")


# --- client actions: cancel and retry ------------------------------------------------------------


def execution_cancel(*, execution: TaskExecution, actor: Actor | None = None, terminate: bool = False) -> TaskExecution:
    """Cancels a waiting execution at once; asks a running one to stop at its next check.

    `terminate=True` (only for task types declared `terminable`) also kills the process running
    it (Celery `revoke(terminate=True)`) and ends the execution `cancelled` right away.
    """
    if terminate:
        task_type = get_task_type(execution.name) if execution.kind == Kind.TASK else None
        if task_type is None or not task_type.terminable:
            raise ApplicationError(
                "This task cannot be terminated; it stops at its next cancellation check.",
                code="terminate_not_supported",
                fields={"terminate": ["Not supported by this task."]},
            )
    for _ in range(3):  # the status may move under us (queued -> running); decide again on the new one
        now = timezone.now()
        current = TaskExecution.objects.select_related("tenant").get(pk=execution.pk)
        if current.status in FINISHED:
            raise Conflict(f"The task already finished ({current.status}).", code="task_finished")
        with transaction.atomic():
            mine = TaskExecution.objects.filter(pk=current.pk, status=current.status, dispatch=current.dispatch)
            if current.status in WAITING or (current.status == Status.RUNNING and terminate):
                ended = mine.update(
                    **_bump(
                        now,
                        status=Status.CANCELLED,
                        cancel_requested_at=Coalesce(F("cancel_requested_at"), now),
                        finished_at=now,
                        lease_expires_at=None,
                        delete_at=_delete_at(Status.CANCELLED, now, tenant=current.tenant),
                        **_error_fields("cancelled", "Cancelled by request.", None),
                    )
                )
                if not ended:
                    continue
                _count_finished(current.name, Status.CANCELLED)
                if current.status == Status.RUNNING and current.celery_task_id:
                    transaction.on_commit(
                        partial(current_app.control.revoke, current.celery_task_id, terminate=True, signal="SIGTERM")
                    )
            elif current.cancel_requested_at is None and not mine.update(**_bump(now, cancel_requested_at=now)):
                continue
            execution_live_changed(execution_id=current.pk)
            audit_record(
                action="task.cancelled",
                tenant=current.tenant,
                actor=actor or SYSTEM,
                target=current,
                data={"status": current.status, "name": current.name, "terminate": terminate},
            )
        break
    else:
        raise Conflict("The task changed state while cancelling; try again.", code="conflict")
    return TaskExecution.objects.get(pk=execution.pk)


RETRYABLE = (Status.FAILED, Status.DEAD)


def execution_retry(*, execution: TaskExecution, actor: Actor | None = None) -> TaskExecution:
    """Starts a failed or dead execution again as a new execution linked by `retry_of`.

    The old record is left as it was (its error and attempts are history); a record can be
    retried once (409 `already_retried`), and the input is validated again against today's schema.
    """
    if execution.status not in RETRYABLE:
        raise Conflict(
            f"Only failed or dead tasks can be retried; this one is {execution.status}.", code="not_retryable"
        )
    if execution.kind == Kind.TASK:
        task_type = require_task_type(execution.name)
        data = task_type.validate_input(execution.input, tenant=execution.tenant)
        queue, max_attempts = task_type.queue, task_type.retry.max_attempts
    elif execution.kind == Kind.DJANGO:  # the same call again, with the same arguments
        data, queue, max_attempts = execution.input, execution.queue, execution.max_attempts
    else:
        raise Conflict("This execution is retried through the API that created it.", code="not_retryable")
    try:
        with transaction.atomic():
            retry = _create(
                tenant=execution.tenant,
                kind=execution.kind,
                name=execution.name,
                data=data,
                queue=queue,
                max_attempts=max_attempts,
                actor=actor,
                retry_of=execution,
            )
            audit_record(
                action="task.retried",
                tenant=execution.tenant,
                actor=actor or SYSTEM,
                target=execution,
                data={"status": execution.status, "name": execution.name, "retry": str(retry.id)},
            )
            execution_publish_on_commit(retry)
    except IntegrityError as exc:
        raise Conflict("This task was already retried.", code="already_retried") from exc
    return retry


# --- the intent API: other apps' work, polled at /api/v1/tasks/<id>/ ---------------------------


def execution_create_for_intent(
    *,
    tenant: Any,
    name: str,
    input: dict[str, Any] | None = None,
    actor: Actor | None = None,
    queue: str = "",
    max_attempts: int = 1,
    idempotency_key: str | None = None,
) -> TaskExecution:
    """Records an execution that another app's worker runs and reports on (kind `intent`).

    Call it in the same transaction as the intent row, store the execution id on the intent,
    and return the execution's URL to the client. This app never publishes or sweeps intent
    executions: the owning app's worker moves them with `execution_mark_*`.
    """
    return _create(
        tenant=tenant,
        kind=Kind.INTENT,
        name=name,
        data=to_json(input or {}),
        queue=queue,
        max_attempts=max_attempts,
        actor=actor,
        idempotency_key=idempotency_key,
    )


def _intent(execution_id: Any, *statuses: str) -> Any:
    return TaskExecution.objects.filter(pk=execution_id, kind=Kind.INTENT, status__in=statuses)


def execution_mark_running(*, execution_id: Any) -> bool:
    """queued/retrying -> running. False if it was cancelled (or already ran): then do not run it."""
    now = timezone.now()
    return bool(
        _intent(execution_id, *WAITING).update(
            **_bump(
                now,
                status=Status.RUNNING,
                attempts=F("attempts") + 1,
                started_at=Coalesce(F("started_at"), now),
                attempt_started_at=now,
            )
        )
    )


def execution_progress(*, execution_id: Any, current: int, total: int | None = None, message: str = "") -> bool:
    """Unthrottled: the caller decides how often (at most about once a second is plenty)."""
    updated = _intent(execution_id, Status.RUNNING).update(
        **_bump(progress_current=current, progress_total=total, progress_message=message[:500])
    )
    if updated:
        execution_live_changed(execution_id=execution_id)
    return bool(updated)


def execution_cancel_requested(*, execution_id: Any) -> bool:
    return TaskExecution.objects.filter(pk=execution_id, cancel_requested_at__isnull=False).exists()


def execution_mark_succeeded(*, execution_id: Any, result: Any = None) -> bool:
    now = timezone.now()
    updated = _intent(execution_id, *ACTIVE).update(
        **_bump(
            now,
            status=Status.SUCCEEDED,
            result=to_json(result),
            finished_at=now,
            delete_at=_delete_at(Status.SUCCEEDED, now, tenant=_tenant_of(execution_id)),
            **_error_fields("", "", None),
        )
    )
    _count_intent(execution_id, Status.SUCCEEDED, updated)
    return bool(updated)


def execution_mark_failed(
    *,
    execution_id: Any,
    code: str,
    message: str,
    exc: BaseException | None = None,
    retry_at: datetime | None = None,
    dead: bool = False,
) -> bool:
    """Ends the execution `failed` (or `dead` when retries are exhausted), or marks it `retrying`
    until `retry_at` when the owning app will run it again (it publishes; this app does not)."""
    now = timezone.now()
    error = _error_fields(code, message, exc)
    if retry_at is not None:
        return bool(
            _intent(execution_id, *ACTIVE).update(**_bump(now, status=Status.RETRYING, run_after=retry_at, **error))
        )
    status = Status.DEAD if dead else Status.FAILED
    updated = _intent(execution_id, *ACTIVE).update(
        **_bump(
            now,
            status=status,
            finished_at=now,
            delete_at=_delete_at(status, now, tenant=_tenant_of(execution_id)),
            **error,
        )
    )
    _count_intent(execution_id, status, updated)
    return bool(updated)


def execution_mark_cancelled(*, execution_id: Any) -> bool:
    now = timezone.now()
    updated = _intent(execution_id, *ACTIVE).update(
        **_bump(
            now,
            status=Status.CANCELLED,
            cancel_requested_at=Coalesce(F("cancel_requested_at"), now),
            finished_at=now,
            delete_at=_delete_at(Status.CANCELLED, now, tenant=_tenant_of(execution_id)),
            **_error_fields("cancelled", "Cancelled by request.", None),
        )
    )
    _count_intent(execution_id, Status.CANCELLED, updated)
    return bool(updated)


def _count_intent(execution_id: Any, status: str, updated: int) -> None:
    if updated:
        execution_live_changed(execution_id=execution_id)
        name = TaskExecution.objects.filter(pk=execution_id).values_list("name", flat=True).first() or ""
        _count_finished(name, status)


def execution_record_refused(
    *,
    tenant: Any,
    name: str,
    data: dict[str, Any],
    code: str,
    message: str,
    actor: Actor | None = None,
    schedule: Schedule | None = None,
    scheduled_for: datetime | None = None,
) -> TaskExecution:
    """Records a run that could not start (a schedule whose task or input went invalid) as `failed`."""
    now = timezone.now()
    execution = _create(
        tenant=tenant,
        kind=Kind.TASK,
        name=name[:200],
        data=to_json(data),
        queue="",
        max_attempts=0,
        actor=actor,
        schedule=schedule,
        scheduled_for=scheduled_for,
        status=Status.FAILED,
    )
    TaskExecution.objects.filter(pk=execution.pk).update(
        finished_at=now, delete_at=_delete_at(Status.FAILED, now, tenant=tenant), **_error_fields(code, message, None)
    )
    _count_finished(execution.name, Status.FAILED)
    execution.refresh_from_db()
    return execution
