"""Writes for events, rules and webhooks. `event_emit` is the entry point for other apps."""

from apps.events.services.events import event_emit

__all__ = ["event_emit"]
