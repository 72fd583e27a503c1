from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "apps.observability"
    label = "observability"

    def ready(self) -> None:
        from apps.observability import checks  # noqa: F401  (registers the configuration checks)
