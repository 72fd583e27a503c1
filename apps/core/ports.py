"""Ports: what a lower layer asks of a higher one, plugged in by the higher one at start-up.

Notifications and tasks announce what happened to them as platform events (`delivery.sent`,
`task.succeeded`), but the events app sits above them: its rules start notifications and tasks.
So they announce through this port, never by importing the events app, and `EventsConfig.ready()`
installs the real bus. Without it (a process that does not load the events app), nothing listens
and announcing costs nothing.

Apps that react to events recorded by clients (a flow cancelled by `order.paid`) subscribe with
`on_event_recorded`; the events app calls `event_recorded` once per event it stores, inside the
transaction that stores it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Listening(Protocol):
    """The event types one tenant's rules and endpoints listen to."""

    def observe(self, event_type: str) -> bool: ...


class EventBus(Protocol):
    """What the events app offers the layers below it."""

    def listeners_of(self, tenant: Any) -> Listening: ...

    def emit(
        self,
        *,
        tenant: Any,
        type: str,
        subject: Any = None,
        payload: Any = None,
        actor: dict[str, Any] | None = None,
        only_if_observed: bool = True,
        depth: int = 0,
    ) -> Any: ...

    def caused_depth(self, source: Any) -> int: ...

    def depth_after_action(self, idempotency_key: str | None) -> int: ...


class _Nobody:
    def observe(self, event_type: str) -> bool:
        return False


class _SilentBus:
    """The bus before the events app plugs in: nobody listens, nothing is written."""

    def listeners_of(self, tenant: Any) -> Listening:
        return _Nobody()

    def emit(self, **kwargs: Any) -> None:
        return None

    def caused_depth(self, source: Any) -> int:
        return 0

    def depth_after_action(self, idempotency_key: str | None) -> int:
        return 0


_bus: EventBus = _SilentBus()  # type: ignore[assignment]
_recorded: list[Callable[[Any], None]] = []


def install_event_bus(bus: EventBus) -> None:
    """Called once by the events app's `ready()`."""
    global _bus
    _bus = bus


def event_bus() -> EventBus:
    return _bus


def on_event_recorded(subscriber: Callable[[Any], None]) -> None:
    """Registers a callable run with each client event the events app stores (idempotent)."""
    if subscriber not in _recorded:
        _recorded.append(subscriber)


def event_recorded(event: Any) -> None:
    """Called by the events app inside the transaction that stored `event`."""
    for subscriber in _recorded:
        subscriber(event)
