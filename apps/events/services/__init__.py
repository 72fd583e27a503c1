"""Writes for events, rules and webhooks. `event_emit` is the entry point for other apps."""

from apps.events.services.events import Listeners, caused_depth, event_emit, is_observed, listeners_of

__all__ = ["Listeners", "caused_depth", "event_emit", "is_observed", "listeners_of"]
