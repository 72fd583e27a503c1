"""Typed access to the `SIGNALBOX_TASKS` settings.

The field defaults below are the single source of each knob's default: project/settings.py passes only
what the environment overrides (apps/core/conf.py says why). A bad value raises ImproperlyConfigured
naming the key, at start (the start-up check calls `tasks_settings()`) or on first use after an override.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.core.conf import as_bool, as_float, as_int, as_mapping, setting


@dataclass(frozen=True)
class TasksSettings:
    # A running execution holds a lease renewed by a heartbeat every quarter of it; a lease that
    # lapses means the worker died, and the sweeper (or the redelivered message) takes over.
    lease_seconds: int = 60
    # progress() writes at most this often (and on each whole-percent change).
    progress_interval_seconds: float = 1.0
    # check_cancelled() reads the row at most this often.
    cancel_check_interval_seconds: float = 0.5
    # Larger results are stored as a file in default_storage and served at /api/v1/tasks/<id>/download/.
    result_inline_max_bytes: int = 256 * 1024
    # Finished executions (and their files) are deleted after this many days; dead ones later.
    result_ttl_days: int = 7
    dead_ttl_days: int = 30
    # Retry waits (and deferred starts) up to this ride on a Celery countdown; longer ones wait in
    # PostgreSQL for the sweeper, because on Redis an ETA past the visibility timeout is duplicated.
    countdown_max_seconds: int = 300
    # An execution committed this long ago and still unpublished is published by the sweeper.
    publish_grace_seconds: int = 30
    min_schedule_interval_seconds: int = 60
    # Registers the test-only task types of apps/tasks/testing.py. Never in production.
    test_tasks: bool = False

    @property
    def heartbeat_seconds(self) -> float:
        # Four beats per lease: three can be missed (a slow database) before the lease expires.
        return self.lease_seconds / 4


def tasks_settings() -> TasksSettings:
    raw = as_mapping(
        setting("SIGNALBOX_TASKS"), "SIGNALBOX_TASKS", known=[f.name.upper() for f in fields(TasksSettings)]
    )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name, where = key.lower(), f"SIGNALBOX_TASKS[{key!r}]"
        kind = TasksSettings.__dataclass_fields__[name].type
        if kind == "bool":
            values[name] = as_bool(value, where)
        elif kind == "float":
            values[name] = as_float(value, where, positive=True)
        else:
            values[name] = as_int(value, where, minimum=1)
    parsed = TasksSettings(**values)
    visibility = int(settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"])  # type: ignore[call-overload]
    if parsed.countdown_max_seconds >= visibility:
        raise ImproperlyConfigured(
            "SIGNALBOX_TASKS['COUNTDOWN_MAX_SECONDS'] (SIGNALBOX_TASK_COUNTDOWN_MAX_SECONDS) must be shorter than "
            "CELERY_VISIBILITY_TIMEOUT."
        )
    return parsed


def poll_retry_after_seconds() -> int:
    return as_int(setting("SIGNALBOX")["POLL_RETRY_AFTER_SECONDS"], "POLL_RETRY_AFTER_SECONDS", minimum=1)
