from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "apps.core"
    label = "core"
    verbose_name = "Signalbox core"

    def ready(self) -> None:
        from apps.core import jsontypes, operations
        from apps.core.conf import core_settings, register_settings
        from apps.core.periodic import register_periodic_jobs, setup_schedules_after_migrate
        from apps.core.retention import register_retention_policies

        # Request bodies are read with JSON's types: no `1` for `true`, no `42` for `"42"`.
        jsontypes.install()

        register_retention_policies([operations.idempotency_retention_policy()])
        register_settings(core_settings)
        register_periodic_jobs(operations.PERIODIC_JOBS)
        # A fresh deploy (or test database) has every periodic job once `migrate` is done.
        post_migrate.connect(setup_schedules_after_migrate, sender=self, dispatch_uid="signalbox.setup_schedules")
