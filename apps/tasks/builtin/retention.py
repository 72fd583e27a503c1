"""`signalbox.maintenance.retention_purge`: the retention purge as a tracked task operators start.

The caller tenant's rows only, any registered policy (apps/core/retention.py), a dry run by default —
`POST /api/v1/tasks/ {"name": "signalbox.maintenance.retention_purge", "input": {"dry_run": true}}`,
then poll it; the result is the purge's report. Safe to kill and rerun: every batch is its own
transaction. The hourly purge of every tenant is `signalbox.maintenance.purge` (apps/core/retention_tasks.py).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.core.retention import purge, retention_policies, retention_policy_names
from apps.tasks.registry import tracked_task
from apps.tasks.runtime import TaskContext
from apps.tenancy.models import Tenant


class RetentionPurgeInput(serializers.Serializer[Any]):
    dry_run = serializers.BooleanField(default=True, help_text="Only count what would be deleted (the default).")
    tables = serializers.ListField(
        child=serializers.ChoiceField(choices=[]),
        required=False,
        default=list,
        help_text="Policies to run; empty: all of them.",
    )
    export = serializers.BooleanField(
        default=False, help_text="Write each batch as JSON lines to storage before deleting it."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The apps register their policies at start-up: the choices are read when the input is.
        tables: Any = self.fields["tables"]
        tables.child.choices = retention_policy_names()


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
    wanted = set(data.get("tables") or retention_policy_names())
    policies = [p for p in retention_policies() if p.name in wanted]
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
