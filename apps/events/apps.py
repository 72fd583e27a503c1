from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "apps.events"
    label = "events"

    def ready(self) -> None:
        from apps.core.partitions import register_partitioned_tables
        from apps.core.periodic import register_periodic_jobs
        from apps.core.ports import install_event_bus
        from apps.core.retention import register_retention_policies
        from apps.events import operations
        from apps.events.bus import EventBus
        from apps.events.services.events import events_retention_policy
        from apps.observability.collectors import register_waiting_sources
        from apps.observability.dashboard import register_dashboard_figures

        # Notifications and tasks announce their outcomes through the port, never importing this app.
        install_event_bus(EventBus())
        register_retention_policies([operations.webhook_messages_retention_policy()])
        # Purged by its own job (signalbox.maintenance.purge_events); listed for operator runs.
        register_retention_policies([events_retention_policy()], shared_purge=False)
        register_periodic_jobs(operations.PERIODIC_JOBS)
        # Partitions ahead for all four; expired events' partitions are dropped by purge_events.
        register_partitioned_tables(operations.EVENT_PARTITIONED_TABLES, shared_purge=False)
        register_partitioned_tables(operations.WEBHOOK_PARTITIONED_TABLES)
        register_waiting_sources(operations.WAITING_SOURCES)
        register_dashboard_figures("intents", operations.intents_today, order=40)
        register_dashboard_figures("dead_letters", operations.dead_letters_today, order=20)
