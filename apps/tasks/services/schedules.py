"""Writes on schedules: create, change, pause, resume, delete, and fire one tick.

Each Schedule owns one django-celery-beat PeriodicTask (`schedule:<id>`, with a CrontabSchedule in
the schedule's timezone or an IntervalSchedule) that calls `signalbox.tasks.run_schedule`. Beat
notices changes because PeriodicTask.save()/delete() bump its change marker.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab as celery_crontab
from croniter import croniter  # type: ignore[import-untyped]
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict
from apps.observability.audit import audit_record
from apps.tasks.conf import tasks_settings
from apps.tasks.models import Schedule, ScheduleKind, TaskExecution
from apps.tasks.schedule_kinds import ScheduleKindSpec, get_schedule_kind, register_schedule_kind
from apps.tasks.services.executions import execution_record_refused, require_task_type, task_start

log = logging.getLogger(__name__)

RUN_SCHEDULE_TASK = "signalbox.tasks.run_schedule"
SCHEDULE_QUEUE = "maintenance"
CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# A beat on a clock this far ahead of the worker's still has its run counted for the right tick.
TICK_TOLERANCE = timedelta(seconds=5)


def _invalid(field: str, code: str, message: str) -> ApplicationError:
    return ApplicationError(message, code=code, fields={field: [message]})


def normalize_cron(expression: str) -> str:
    """Five fields (minute hour day-of-month month day-of-week) or a macro such as @daily."""
    expression = " ".join(expression.split())
    expression = CRON_MACROS.get(expression.lower(), expression)
    fields = expression.split(" ")
    if len(fields) != 5:
        raise _invalid("cron", "invalid_cron", "A cron expression has five fields: minute hour day month weekday.")
    if not croniter.is_valid(expression):
        raise _invalid("cron", "invalid_cron", f"{expression!r} is not a valid cron expression.")
    try:  # beat evaluates it with Celery's parser, which must accept it too
        celery_crontab(*fields)
    except (ValueError, IndexError) as exc:
        raise _invalid("cron", "invalid_cron", f"{expression!r}: {exc}") from exc
    return expression


def normalize_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _invalid("timezone", "invalid_timezone", f"Unknown timezone {name!r} (use an IANA name).") from exc
    return name


def _check_timing(cron: str, interval_seconds: int | None) -> tuple[str, int | None]:
    if bool(cron) == (interval_seconds is not None):
        raise ApplicationError(
            "Give either cron or interval_seconds.",
            code="validation_error",
            fields={"cron": ["Give either cron or interval_seconds."]},
        )
    if interval_seconds is not None:
        least = tasks_settings().min_schedule_interval_seconds
        if interval_seconds < least:
            raise _invalid("interval_seconds", "interval_too_short", f"The shortest interval is {least} seconds.")
        return "", interval_seconds
    return normalize_cron(cron), None


def _sync_periodic_task(schedule: Schedule) -> PeriodicTask:
    """Creates or updates the schedule's PeriodicTask to match it."""
    crontab: CrontabSchedule | None = None
    interval: IntervalSchedule | None = None
    if schedule.cron:
        minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron.split(" ")
        fields = {
            "minute": minute,
            "hour": hour,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
            "day_of_week": day_of_week,
            "timezone": schedule.timezone,
        }
        crontab = CrontabSchedule.objects.filter(**fields).first() or CrontabSchedule.objects.create(**fields)
    else:
        assert schedule.interval_seconds is not None
        interval_fields = {"every": schedule.interval_seconds, "period": IntervalSchedule.SECONDS}
        interval = IntervalSchedule.objects.filter(**interval_fields).first() or IntervalSchedule.objects.create(
            **interval_fields
        )
    periodic = schedule.periodic_task or PeriodicTask(name=schedule.periodic_task_name)
    periodic.task = RUN_SCHEDULE_TASK
    periodic.kwargs = json.dumps({"schedule_id": str(schedule.id)})
    periodic.queue = SCHEDULE_QUEUE
    periodic.crontab = crontab
    periodic.interval = interval
    periodic.enabled = schedule.enabled
    periodic.description = f"Tenant {schedule.tenant_id}: {schedule.name}"
    periodic.save()
    return periodic


def schedule_create(
    *,
    tenant: Any,
    name: str,
    target: dict[str, Any],
    kind: str = "task",
    cron: str = "",
    interval_seconds: int | None = None,
    timezone_name: str = "UTC",
    description: str = "",
    enabled: bool = True,
    actor: Actor | None = None,
) -> Schedule:
    spec = get_schedule_kind(kind)
    stored_target = spec.validate(tenant, target)
    cron, interval_seconds = _check_timing(cron, interval_seconds)
    timezone_name = normalize_timezone(timezone_name)
    actor_type, actor_id = (actor or SYSTEM).record
    try:
        with transaction.atomic():
            schedule = Schedule.objects.create(
                tenant=tenant,
                name=name,
                description=description,
                kind=kind,
                target=stored_target,
                cron=cron,
                interval_seconds=interval_seconds,
                timezone=timezone_name,
                enabled=enabled,
                actor_type=actor_type,
                actor_id=actor_id,
            )
            schedule.periodic_task = _sync_periodic_task(schedule)
            schedule.save(update_fields=["periodic_task"])
            audit_record(
                action="schedule.created", tenant=tenant, actor=actor or SYSTEM, target=schedule,
                data={"name": name, "kind": kind, **schedule.describe()},
            )  # fmt: skip
    except IntegrityError as exc:
        raise Conflict(
            f"A schedule named {name!r} exists.", code="schedule_exists", fields={"name": ["Taken."]}
        ) from exc
    return schedule


def schedule_update(*, schedule: Schedule, changes: dict[str, Any], actor: Actor | None = None) -> Schedule:
    """Changes name, description, target, timing or timezone; validated as on create."""
    if "target" in changes:
        schedule.target = get_schedule_kind(schedule.kind).validate(schedule.tenant, changes["target"])
    if "cron" in changes or "interval_seconds" in changes:
        # Giving one switches the schedule to it; giving both is refused unless one is empty.
        schedule.cron, schedule.interval_seconds = _check_timing(
            changes.get("cron") or "", changes.get("interval_seconds")
        )
    if "timezone" in changes:
        schedule.timezone = normalize_timezone(changes["timezone"])
    for field in ("name", "description"):
        if field in changes:
            setattr(schedule, field, changes[field])
    schedule.updated_at = timezone.now()
    try:
        with transaction.atomic():
            schedule.save()
            schedule.periodic_task = _sync_periodic_task(schedule)
            schedule.save(update_fields=["periodic_task"])
            audit_record(
                action="schedule.updated", tenant=schedule.tenant, actor=actor or SYSTEM, target=schedule,
                data={"changed": sorted(changes)},
            )  # fmt: skip
    except IntegrityError as exc:
        raise Conflict(
            "A schedule with this name exists.", code="schedule_exists", fields={"name": ["Taken."]}
        ) from exc
    return schedule


def _set_enabled(schedule: Schedule, enabled: bool, action: str, actor: Actor | None) -> Schedule:
    with transaction.atomic():
        schedule.enabled = enabled
        schedule.updated_at = timezone.now()
        schedule.save(update_fields=["enabled", "updated_at"])
        schedule.periodic_task = _sync_periodic_task(schedule)
        schedule.save(update_fields=["periodic_task"])
        audit_record(action=action, tenant=schedule.tenant, actor=actor or SYSTEM, target=schedule)
    return schedule


def schedule_pause(*, schedule: Schedule, actor: Actor | None = None) -> Schedule:
    return _set_enabled(schedule, False, "schedule.paused", actor)


def schedule_resume(*, schedule: Schedule, actor: Actor | None = None) -> Schedule:
    return _set_enabled(schedule, True, "schedule.resumed", actor)


def schedule_delete(*, schedule: Schedule, actor: Actor | None = None) -> None:
    """Deletes the schedule and its PeriodicTask; its past runs stay (unlinked) until they expire."""
    with transaction.atomic():
        audit_record(
            action="schedule.deleted", tenant=schedule.tenant, actor=actor or SYSTEM, target=schedule,
            data={"name": schedule.name},
        )  # fmt: skip
        periodic = schedule.periodic_task
        schedule.delete()
        if periodic is not None:
            periodic.delete()


def schedule_tick(schedule: Schedule, now: datetime) -> datetime:
    """The tick a run at `now` belongs to: the latest cron time, or interval slot, at or before it."""
    if schedule.cron:
        zone = ZoneInfo(schedule.timezone)
        base = (now + TICK_TOLERANCE).astimezone(zone)
        previous: datetime = croniter(schedule.cron, base).get_prev(datetime)
        return previous.astimezone(ZoneInfo("UTC"))
    every = float(schedule.interval_seconds or 1)
    tolerance = min(TICK_TOLERANCE.total_seconds(), every / 10)
    slots = math.floor(((now - schedule.created_at).total_seconds() + tolerance) / every)
    return schedule.created_at + timedelta(seconds=slots * every)


def schedule_next_run(schedule: Schedule, now: datetime | None = None) -> datetime | None:
    if not schedule.enabled:
        return None
    now = now or timezone.now()
    if schedule.cron:
        following: datetime = croniter(schedule.cron, now.astimezone(ZoneInfo(schedule.timezone))).get_next(datetime)
        return following.astimezone(ZoneInfo("UTC"))
    every = float(schedule.interval_seconds or 1)
    slots = math.floor((now - schedule.created_at).total_seconds() / every) + 1
    return schedule.created_at + timedelta(seconds=slots * every)


def schedule_fire(*, schedule_id: str, now: datetime | None = None) -> TaskExecution | None:
    """One beat tick: creates this tick's execution, or nothing if it exists (a second beat).

    An input that no longer validates (the task's schema changed) is recorded as a failed run,
    so the tenant sees why the schedule did nothing.
    """
    now = now or timezone.now()
    schedule = Schedule.objects.select_related("tenant").filter(pk=schedule_id).first()
    if schedule is None:
        # Its tenant was deleted (the cascade does not reach beat's row): stop beat calling.
        for orphan in PeriodicTask.objects.filter(name=f"schedule:{schedule_id}"):
            orphan.delete()
        return None
    if not schedule.enabled or not schedule.tenant.is_active:
        return None
    tick = schedule_tick(schedule, now)
    spec = get_schedule_kind(schedule.kind)
    try:
        with transaction.atomic():
            try:
                with transaction.atomic():
                    execution = spec.fire(schedule, tick)
            except ApplicationError as exc:
                execution = execution_record_refused(
                    tenant=schedule.tenant,
                    name=str(schedule.target.get("task") or schedule.kind),
                    data=schedule.target.get("input") or {},
                    code=exc.code,
                    message=f"The schedule could not start its task: {exc.message}",
                    actor=Actor(kind="schedule", id=str(schedule.id)),
                    schedule=schedule,
                    scheduled_for=tick,
                )
            Schedule.objects.filter(pk=schedule.pk).update(last_run_at=now, last_execution_id=execution.id)
    except IntegrityError:
        log.info("schedule tick already fired", extra={"schedule_id": schedule_id, "tick": tick.isoformat()})
        return None
    return execution


# --- the `task` kind: a schedule that starts a registered task type ----------------------------------


def _validate_task_target(tenant: Any, target: Any) -> dict[str, Any]:
    if not isinstance(target, dict) or not isinstance(target.get("task"), str):
        raise ApplicationError(
            'The target is {"task": "<task name>", "input": {...}}.',
            code="validation_error",
            fields={"target": ['Expected {"task": "<task name>", "input": {...}}.']},
        )
    unknown = sorted(set(target) - {"task", "input"})
    if unknown:
        raise ApplicationError(
            f"Unknown target keys: {', '.join(unknown)}.",
            code="validation_error",
            fields={"target": [f"Unknown keys: {', '.join(unknown)}."]},
        )
    try:
        task_type = require_task_type(target["task"])
        data = task_type.validate_input(target.get("input"), tenant=tenant)
    except ApplicationError as exc:
        # Same status: an unknown task is 422 (a rule about the tenant's tasks), a malformed input 400.
        raise ApplicationError(
            exc.message, code=exc.code, status_code=exc.status_code, fields={"target": exc.fields}
        ) from exc
    return {"task": task_type.name, "input": data}


def _fire_task(schedule: Schedule, tick: datetime) -> TaskExecution:
    return task_start(
        tenant=schedule.tenant,
        name=schedule.target["task"],
        input=schedule.target.get("input") or {},
        actor=Actor(kind="schedule", id=str(schedule.id)),
        schedule=schedule,
        scheduled_for=tick,
    )


register_schedule_kind(ScheduleKindSpec(name=ScheduleKind.TASK, validate=_validate_task_target, fire=_fire_task))
