"""What the observability app hands the platform's upkeep: the audit log's retention policy and its
periodic purge (registered by `ObservabilityConfig.ready()`). The policy runs in its own job
(`signalbox.maintenance.purge_audit`, apps/observability/audit.py)."""

from __future__ import annotations

from apps.core.periodic import PeriodicJob

PERIODIC_JOBS = (
    PeriodicJob(
        name="purge audit log",
        task="signalbox.maintenance.purge_audit",
        every_seconds=3600,
        description="Deletes audit entries past retention (tenant retention_days.audit, else AUDIT_RETENTION_DAYS).",
    ),
)
