"""Multi-step notification flows (docs/flows.md)."""

from __future__ import annotations

from django.apps import AppConfig


class FlowsConfig(AppConfig):
    name = "apps.flows"
    label = "flows"
    verbose_name = "Flows"

    def ready(self) -> None:
        """Plugs the engine into the notifications hooks and the events port."""
        from apps.flows import plugin

        plugin.install()
