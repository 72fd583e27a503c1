from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "apps.observability"
    label = "observability"

    def ready(self) -> None:
        from apps.core.periodic import register_periodic_jobs
        from apps.core.retention import on_rows_purged, register_retention_policies
        from apps.observability import (
            checks,  # noqa: F401  (registers the configuration checks)
            metrics,
            operations,
        )
        from apps.observability.audit import audit_retention_policy

        register_periodic_jobs(operations.PERIODIC_JOBS)
        # Purged by its own job (signalbox.maintenance.purge_audit); listed for dry and operator runs.
        register_retention_policies([audit_retention_policy()], shared_purge=False)
        on_rows_purged(metrics.count_rows_purged)
