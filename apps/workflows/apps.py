from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "apps.workflows"
    label = "workflows"

    def ready(self) -> None:
        from apps.core.periodic import register_periodic_jobs
        from apps.core.retention import register_retention_policies
        from apps.observability.collectors import register_waiting_sources
        from apps.observability.dashboard import register_dashboard_figures
        from apps.workflows import operations
        from apps.workflows.services.transitions import intents_retention_policy

        register_periodic_jobs(operations.PERIODIC_JOBS)
        # Purged by its own job (signalbox.maintenance.purge_transition_intents); listed for operator runs.
        register_retention_policies([intents_retention_policy()], shared_purge=False)
        register_waiting_sources(operations.WAITING_SOURCES)
        register_dashboard_figures("intents", operations.intents_today, order=30)
