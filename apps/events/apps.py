from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "apps.events"
    label = "events"

    def ready(self) -> None:
        from apps.core.ports import install_event_bus
        from apps.events.bus import EventBus

        # Notifications and tasks announce their outcomes through the port, never importing this app.
        install_event_bus(EventBus())
