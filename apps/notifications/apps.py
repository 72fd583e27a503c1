from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "apps.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from apps.core.conf import register_settings
        from apps.core.partitions import register_partitioned_tables
        from apps.core.periodic import register_periodic_jobs
        from apps.core.retention import register_retention_policies
        from apps.notifications import (  # noqa: F401  (schema: the OpenAPI auth extension)
            checks,
            conf,
            lookups,
            operations,
            schema,
        )
        from apps.notifications.selectors import provider_recent_outcomes
        from apps.notifications.services.digest import digest_settings
        from apps.notifications.services.scheduling import (
            SCHEDULE_KIND,
            schedule_fire_notification,
            schedule_target_validate,
        )
        from apps.observability.collectors import register_waiting_sources
        from apps.observability.dashboard import register_dashboard_figures
        from apps.providers.selectors import register_recent_outcomes
        from apps.tasks.schedule_kinds import ScheduleKindSpec, register_schedule_kind

        lookups.register()
        register_settings(conf.get, conf.wiring, digest_settings)
        # `kind: "notification"` schedules (POST /api/v1/schedules/): web processes validate, workers fire.
        register_schedule_kind(
            ScheduleKindSpec(name=SCHEDULE_KIND, validate=schedule_target_validate, fire=schedule_fire_notification)
        )
        register_retention_policies(operations.retention_policies())
        register_periodic_jobs(operations.PERIODIC_JOBS)
        register_partitioned_tables(operations.PARTITIONED_TABLES)
        register_waiting_sources(operations.WAITING_SOURCES)
        register_dashboard_figures("intents", operations.intents_today, order=10)
        register_dashboard_figures("deliveries", operations.deliveries_today, order=10)
        register_dashboard_figures("dead_letters", operations.dead_letters_today, order=10)
        # The providers' health overview reads our attempts.
        register_recent_outcomes(provider_recent_outcomes)  # the providers' health overview reads our attempts
        from apps.notifications import tracked  # noqa: F401  (registers the recipients import task type)
