"""Typed access to the `SIGNALBOX_TASKS` settings (defaults and checks live in project/settings.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class TasksSettings:
    lease_seconds: int
    progress_interval_seconds: float
    cancel_check_interval_seconds: float
    result_inline_max_bytes: int
    result_ttl_days: int
    dead_ttl_days: int
    countdown_max_seconds: int
    publish_grace_seconds: int
    min_schedule_interval_seconds: int
    test_tasks: bool

    @property
    def heartbeat_seconds(self) -> float:
        # Four beats per lease: three can be missed (a slow database) before the lease expires.
        return self.lease_seconds / 4


def tasks_settings() -> TasksSettings:
    raw: dict[str, Any] = getattr(settings, "SIGNALBOX_TASKS", {})
    return TasksSettings(
        lease_seconds=int(raw.get("LEASE_SECONDS", 60)),
        progress_interval_seconds=float(raw.get("PROGRESS_INTERVAL_SECONDS", 1.0)),
        cancel_check_interval_seconds=float(raw.get("CANCEL_CHECK_INTERVAL_SECONDS", 0.5)),
        result_inline_max_bytes=int(raw.get("RESULT_INLINE_MAX_BYTES", 256 * 1024)),
        result_ttl_days=int(raw.get("RESULT_TTL_DAYS", 7)),
        dead_ttl_days=int(raw.get("DEAD_TTL_DAYS", 30)),
        countdown_max_seconds=int(raw.get("COUNTDOWN_MAX_SECONDS", 300)),
        publish_grace_seconds=int(raw.get("PUBLISH_GRACE_SECONDS", 30)),
        min_schedule_interval_seconds=int(raw.get("MIN_SCHEDULE_INTERVAL_SECONDS", 60)),
        test_tasks=bool(raw.get("TEST_TASKS", False)),
    )


def poll_retry_after_seconds() -> int:
    return int(settings.SIGNALBOX.get("POLL_RETRY_AFTER_SECONDS", 2))
