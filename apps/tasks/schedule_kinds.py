"""What a schedule can run, by `kind`. The seam other apps use to add their own schedule kinds.

A kind validates its `target` JSON when a schedule is created or changed, and `fire`s once per
tick by creating the TaskExecution of that run, with `schedule` and `scheduled_for` set (the
unique (schedule, scheduled_for) rule is what keeps two beats from firing a tick twice), so every
run is polled like any task. Only `task` exists today:

    {"kind": "task", "target": {"task": "signalbox.exports.deliveries_csv", "input": {...}}}

The notifications app can add e.g. "notification" in its `apps.py` `ready()`:

    register_schedule_kind(ScheduleKindSpec(name="notification", validate=..., fire=...))

where `fire` records its intent and an execution with `execution_create_for_intent(...)`, then
sets `schedule`/`scheduled_for` on it before commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apps.core.errors import ApplicationError
from apps.tasks.models import Schedule, ScheduleKind, TaskExecution


@dataclass(frozen=True)
class ScheduleKindSpec:
    name: str
    # (tenant, target) -> the target to store; raises ApplicationError with `fields` when invalid.
    validate: Callable[[Any, Any], dict[str, Any]]
    # (schedule, tick) -> the execution recording this run.
    fire: Callable[[Schedule, datetime], TaskExecution]


_KINDS: dict[str, ScheduleKindSpec] = {}


def register_schedule_kind(spec: ScheduleKindSpec) -> None:
    _KINDS[spec.name] = spec


def get_schedule_kind(name: str) -> ScheduleKindSpec:
    spec = _KINDS.get(name)
    if spec is None:
        raise ApplicationError(
            f"Unknown schedule kind {name!r}.",
            code="unknown_schedule_kind",
            fields={"kind": [f"Choose from {sorted(_KINDS)}."]},
        )
    return spec


def _validate_task_target(tenant: Any, target: Any) -> dict[str, Any]:
    from apps.tasks.services.executions import require_task_type

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
    from apps.tasks.services.executions import task_start

    return task_start(
        tenant=schedule.tenant,
        name=schedule.target["task"],
        input=schedule.target.get("input") or {},
        actor=("schedule", str(schedule.id)),
        schedule=schedule,
        scheduled_for=tick,
    )


register_schedule_kind(ScheduleKindSpec(name=ScheduleKind.TASK, validate=_validate_task_target, fire=_fire_task))
