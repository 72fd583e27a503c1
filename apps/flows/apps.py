"""Multi-step notification flows (docs/flows.md)."""

from __future__ import annotations

from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "apps.flows"
    label = "flows"
    verbose_name = "Flows"

    def ready(self) -> None:
        """Plugs the engine into the notifications hooks and the events port; registers its jobs."""
        from apps.core.periodic import register_periodic_jobs
        from apps.flows import operations, plugin

        plugin.install()
        register_periodic_jobs(operations.PERIODIC_JOBS)
