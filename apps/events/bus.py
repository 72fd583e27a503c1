"""The events app's side of the event-bus port (`apps.core.ports`): what the layers below it call.

Notifications and tasks announce delivery and task outcomes through `apps.core.ports.event_bus()`,
never by importing this app (it sits above them: its rules start notifications and tasks).
`EventsConfig.ready()` installs an `EventBus` here, so they reach the same functions as before.
"""

from __future__ import annotations

from typing import Any

from apps.events.models import Event
from apps.events.services.events import Listeners, caused_depth, event_emit, listeners_of
from apps.events.services.rules import depth_after_action


class EventBus:
    """`apps.core.ports.EventBus`, answered by the events services."""

    def listeners_of(self, tenant: Any) -> Listeners:
        return listeners_of(tenant)

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
    ) -> Event | None:
        return event_emit(
            tenant=tenant,
            type=type,
            subject=subject,
            payload=payload,
            actor=actor,
            only_if_observed=only_if_observed,
            depth=depth,
        )

    def caused_depth(self, source: Any) -> int:
        return caused_depth(source)

    def depth_after_action(self, idempotency_key: str | None) -> int:
        return depth_after_action(idempotency_key)
