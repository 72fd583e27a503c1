from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "apps.providers"
    label = "providers"

    def ready(self) -> None:
        from apps.core.periodic import register_periodic_jobs
        from apps.providers import operations

        register_periodic_jobs(operations.PERIODIC_JOBS)
