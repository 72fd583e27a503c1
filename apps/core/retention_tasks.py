"""The retention purge as background work: the hourly beat job and a tracked task operators can start.

- `signalbox.maintenance.purge` (beat, hourly, `maintenance` queue): the notification pipeline's
  policies (apps/core/retention_policies.py) for every tenant, bounded to
  `SIGNALBOX_RETENTION_MAX_SECONDS` per run (the rest goes next hour). Its result (kept by the
  Celery result backend) is the report: rows deleted per table, rows cascaded per model.
- `signalbox.maintenance.retention_purge` (tracked): the caller tenant's rows only, any policy,
  a dry run by default — `POST /api/v1/tasks/ {"name": "signalbox.maintenance.retention_purge",
  "input": {"dry_run": true}}`, then poll it; the result is the same report.

Both are safe to kill and rerun: every batch is its own transaction.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from rest_framework import serializers

from apps.core.retention import purge
from apps.core.retention_policies import all_policies, notification_policies, policy_names
from apps.tasks.registry import tracked_task
from apps.tasks.runtime import TaskContext


def _max_seconds() -> float:
    return float(getattr(settings, "SIGNALBOX_RETENTION_MAX_SECONDS", 240))


@shared_task(name="signalbox.maintenance.purge", queue="maintenance")
def purge_expired_rows(dry_run: bool = False) -> dict[str, Any]:
    """Beat, hourly: deletes the notification pipeline's rows past retention; returns the report."""
    return purge(
        notification_policies(),
        dry_run=dry_run,
        max_seconds=_max_seconds(),
    ).as_dict()


class RetentionPurgeInput(serializers.Serializer[Any]):
    dry_run = serializers.BooleanField(default=True, help_text="Only count what would be deleted (the default).")
    tables = serializers.ListField(
        child=serializers.ChoiceField(choices=policy_names()),
        required=False,
        default=list,
        help_text="Policies to run; empty: all of them.",
    )
    export = serializers.BooleanField(
        default=False, help_text="Write each batch as JSON lines to storage before deleting it."
    )


@tracked_task(
    name="signalbox.maintenance.retention_purge",
    queue="maintenance",
    input=RetentionPurgeInput,
    max_retries=2,
    retry_backoff=30,
    soft_time_limit=1800,
    time_limit=1860,
    terminable=True,
)
def retention_purge(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
    """Purges (or with dry_run, counts) this tenant's rows past retention, table by table."""
    from apps.tenancy.models import Tenant

    wanted = set(data.get("tables") or policy_names())
    policies = [p for p in all_policies() if p.name in wanted]
    tenants = list(Tenant.objects.filter(pk=ctx.tenant_id)) if ctx.tenant_id else None
    done = 0

    def on_batch(table: str, rows: int) -> None:
        nonlocal done
        done += rows
        ctx.progress(done, None, f"purging {table}")
        ctx.check_cancelled()

    report = purge(
        policies,
        dry_run=bool(data.get("dry_run", True)),
        export=bool(data.get("export", False)),
        tenants=tenants,
        on_batch=on_batch,
        max_seconds=1700,
    )
    return report.as_dict()
