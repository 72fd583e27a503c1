"""The hourly retention purge: `signalbox.maintenance.purge` (beat, hourly, `maintenance` queue).

It runs the policies the apps registered for the shared purge (apps/core/retention.py) for every
tenant, bounded to `SIGNALBOX_RETENTION_MAX_SECONDS` per run (the rest goes next hour). Its result
(kept by the Celery result backend) is the report: rows deleted per table, rows cascaded per model.
Operators purge one tenant (any policy, a dry run by default) with the tracked task
`signalbox.maintenance.retention_purge` (apps/tasks/builtin/retention.py).

Safe to kill and rerun: every batch is its own transaction.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.core.conf import core_settings
from apps.core.retention import purge, shared_purge_policies


def _max_seconds() -> float:
    return float(core_settings().retention_max_seconds)


@shared_task(name="signalbox.maintenance.purge", queue="maintenance")
def purge_expired_rows(dry_run: bool = False) -> dict[str, Any]:
    """Beat, hourly: deletes the registered tables' rows past retention; returns the report."""
    return purge(
        shared_purge_policies(),
        dry_run=dry_run,
        max_seconds=_max_seconds(),
    ).as_dict()
