from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "apps.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from apps.notifications import lookups, schema  # noqa: F401  (schema: the OpenAPI auth extension)

        lookups.register()
        from apps.notifications.services.scheduling import register_schedule_kind

        register_schedule_kind()  # `kind: "notification"` schedules (POST /api/v1/schedules/)
        from apps.notifications.selectors import provider_recent_outcomes
        from apps.providers.selectors import register_recent_outcomes

        register_recent_outcomes(provider_recent_outcomes)  # the providers' health overview reads our attempts
        from apps.notifications import tracked  # noqa: F401  (registers the recipients import task type)
