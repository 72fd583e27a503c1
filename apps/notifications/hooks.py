"""Registration hooks: how a plug-in app (apps.flows) runs a notification in steps of its own and
hears what happened to its deliveries, without the notifications app importing it.

Each hook is a list of callables a plug-in fills from its `AppConfig.ready()`; with nothing
registered every call site costs nothing. The call sites are single lines in the services:

- `notification_planner`: `notification_create` asks it for the flow named in the request (its
  template and channels) and lets it attach itself inside the creating transaction;
- `fan_out_taken_over`: the fan-out task hands an accepted notification to the plug-in that
  attached itself to it, instead of fanning it out at once;
- `completion_filter`: a condition a dispatched notification must also meet to complete (a plug-in
  with work left for it says no), folded into the completing UPDATE: no statement of its own;
- `delivery_outcomes`: deliveries reached an outcome (a provider's report, or failed/dead at send);
- `inbox_changed`: in-app items were read or seen;
- `engaged`: an email was opened or a link in it clicked (its first such view);
- `cancelled`: a notification was cancelled (what is not sent yet stays unsent);
- `delivery_run`: a delivery's detail shows the recipient's run through the plug-in's steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from apps.core.errors import ApplicationError


@dataclass(frozen=True)
class Plan:
    """What a planner decided for a notification: the template and channels it uses, and what to
    run inside the creating transaction once the notification row exists."""

    template: str | None
    channels: list[str]
    attach: Callable[[Any], None] = field(repr=False)


Planner = Callable[..., Plan]

_planners: list[Planner] = []
_take_over: list[Callable[[Any], bool]] = []
_completion: list[Callable[[], Q]] = []
_outcomes: list[Callable[[Sequence[tuple[Any, str]]], None]] = []
_inbox: list[Callable[[Sequence[Any]], None]] = []
_engaged: list[Callable[[Sequence[Any]], None]] = []
_cancelled: list[Callable[[Any], None]] = []
_run_readers: list[Callable[..., Mapping[str, Any] | None]] = []


def _add(registry: list[Any], callback: Any) -> None:
    if callback not in registry:
        registry.append(callback)


def register_planner(planner: Planner) -> None:
    """`planner(*, tenant, key, template, content, channels, payload) -> Plan`, raising
    ApplicationError (`validation_error` with `fields`) for a flow it cannot run."""
    _add(_planners, planner)


def on_fan_out(callback: Callable[[Any], bool]) -> None:
    """`callback(notification_id) -> bool`: True when it took the notification over."""
    _add(_take_over, callback)


def on_completion_filter(callback: Callable[[], Q]) -> None:
    """`callback() -> Q` over Notification: only notifications matching it may complete."""
    _add(_completion, callback)


def on_delivery_outcome(callback: Callable[[Sequence[tuple[Any, str]]], None]) -> None:
    """`callback([(delivery_id, status), ...])`, inside the transaction that recorded them."""
    _add(_outcomes, callback)


def on_inbox_read(callback: Callable[[Sequence[Any]], None]) -> None:
    """`callback([delivery_id, ...])`, inside the transaction that marked them read or seen."""
    _add(_inbox, callback)


def on_engagement(callback: Callable[[Sequence[Any]], None]) -> None:
    """`callback([delivery_id, ...])`, inside the transaction that recorded a first open or click."""
    _add(_engaged, callback)


def on_cancel(callback: Callable[[Any], None]) -> None:
    """`callback(notification_id)`, inside the transaction that cancelled it (holding its lock)."""
    _add(_cancelled, callback)


def on_delivery_detail(callback: Callable[..., Mapping[str, Any] | None]) -> None:
    """`callback(*, tenant_id, notification_id, recipient_id) -> dict | None`: the recipient's run
    through the notification's steps (None when the notification has none)."""
    _add(_run_readers, callback)


def notification_planner(
    *,
    tenant: Any,
    key: str,
    template: str | None,
    content: Mapping[str, Any] | None,
    channels: Sequence[str] | None,
    payload: Mapping[str, Any],
) -> Plan:
    if not _planners:
        raise ApplicationError(
            "Flows are not available here.", code="validation_error", fields={"flow": ["No flow engine installed."]}
        )
    return _planners[0](tenant=tenant, key=key, template=template, content=content, channels=channels, payload=payload)


def fan_out_taken_over(notification_id: Any) -> bool:
    return any(callback(notification_id) for callback in _take_over)


def completion_filter() -> Q:
    condition = Q()
    for callback in _completion:
        condition &= callback()
    return condition


def delivery_outcomes(outcomes: Iterable[tuple[Any, str]]) -> None:
    if _outcomes:
        listed = list(outcomes)
        if listed:
            for callback in _outcomes:
                callback(listed)


def inbox_changed(delivery_ids: Iterable[Any]) -> None:
    if _inbox:
        listed = list(delivery_ids)
        if listed:
            for callback in _inbox:
                callback(listed)


def engaged(delivery_ids: Iterable[Any]) -> None:
    if _engaged:
        listed = list(delivery_ids)
        if listed:
            for callback in _engaged:
                callback(listed)


def cancelled(notification_id: Any) -> None:
    for callback in _cancelled:
        callback(notification_id)


def delivery_run(*, tenant_id: Any, notification_id: Any, recipient_id: Any) -> Mapping[str, Any] | None:
    for callback in _run_readers:
        run = callback(tenant_id=tenant_id, notification_id=notification_id, recipient_id=recipient_id)
        if run is not None:
            return run
    return None
