"""What a schedule can run, by `kind`. The seam other apps use to add their own schedule kinds.

A kind validates its `target` JSON when a schedule is created or changed, and `fire`s once per
tick by creating the TaskExecution of that run, with `schedule` and `scheduled_for` set (the
unique (schedule, scheduled_for) rule is what keeps two beats from firing a tick twice), so every
run is polled like any task. The tasks app's own kind, `task`, is registered by its services
(apps/tasks/services/schedules.py):

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
from apps.tasks.models import Schedule, TaskExecution


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
