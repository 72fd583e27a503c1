"""What core itself hands the platform's upkeep, registered by `CoreConfig.ready()` like any app's:
the `Idempotency-Key` records' retention policy, the hourly shared retention purge and Celery's own
result cleanup."""

from __future__ import annotations

from apps.core.models import IdempotencyRecord
from apps.core.periodic import CELERY_BACKEND_CLEANUP, PeriodicJob
from apps.core.retention import RetentionPolicy


def idempotency_retention_policy() -> RetentionPolicy:
    """`Idempotency-Key` records past their `delete_at`: one whole-table pass (the shared purge runs it last)."""
    return RetentionPolicy(
        name="idempotency_keys",
        model=lambda: IdempotencyRecord,
        time_field="delete_at",
        default_days=0,
        per_tenant=False,
        description="Idempotency-Key records past their expiry.",
    )


PERIODIC_JOBS = (
    PeriodicJob(
        name="retention: purge notification data",
        task="signalbox.maintenance.purge",
        every_seconds=3600,
        description="Deletes deliveries, inbox items, notifications, digest windows, webhook messages and "
        "idempotency keys past retention (SIGNALBOX_RETENTION_DAYS, tenant retention_days), in batches.",
    ),
    PeriodicJob(
        name="retention: create partitions ahead",
        task="signalbox.maintenance.partitions",
        every_seconds=6 * 3600,
        description="PostgreSQL: keeps SIGNALBOX_PARTITIONS_AHEAD monthly partitions ahead (and DEFAULT) for "
        "each partitioned history table.",
    ),
    CELERY_BACKEND_CLEANUP,
)
