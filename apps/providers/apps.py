from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "apps.providers"
    label = "providers"

    def ready(self) -> None:
        from apps.core.conf import register_settings
        from apps.core.periodic import register_periodic_jobs
        from apps.providers import operations
        from apps.providers.circuit import breaker_settings
        from apps.providers.conf import providers_settings

        register_periodic_jobs(operations.PERIODIC_JOBS)
        register_settings(providers_settings, breaker_settings)
