"""The hourly retention purge: `signalbox.maintenance.purge` (beat, hourly, `maintenance` queue).

It runs the policies the apps registered for the shared purge (apps/core/retention.py) for every
tenant, bounded to `SIGNALBOX_RETENTION_MAX_SECONDS` per run (the rest goes next hour). Its result
(kept by the Celery result backend) is the report: rows deleted per table, rows cascaded per model.
Operators purge one tenant (any policy, a dry run by default) with the tracked task
`signalbox.maintenance.retention_purge` (apps/tasks/builtin/retention.py).

On PostgreSQL it first drops the partitions whose rows are all past retention (apps/core/partitions.py),
then deletes the rest in batches. `signalbox.maintenance.partitions` (beat, daily) creates the
partitions ahead.

Safe to kill and rerun: every batch, and every partition dropped, is its own transaction.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.core.conf import core_settings
from apps.core.partitions import partitions_drop_expired, partitions_ensure
from apps.core.retention import purge, shared_purge_policies


def _max_seconds() -> float:
    return float(core_settings().retention_max_seconds)


@shared_task(name="signalbox.maintenance.purge", queue="maintenance")
def purge_expired_rows(dry_run: bool = False) -> dict[str, Any]:
    """Beat, hourly: drops expired partitions, deletes the rest past retention; returns the report."""
    dropped = partitions_drop_expired(dry_run=dry_run)
    report = purge(
        shared_purge_policies(),
        dry_run=dry_run,
        max_seconds=_max_seconds(),
    ).as_dict()
    return {**report, "partitions": dropped.as_dict()}


@shared_task(name="signalbox.maintenance.partitions", queue="maintenance")
def create_partitions_ahead() -> list[str]:
    """Beat, daily: this month's partition and SIGNALBOX_PARTITIONS_AHEAD more for each partitioned table."""
    return partitions_ensure()
