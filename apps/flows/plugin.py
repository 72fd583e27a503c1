"""Where flows plug into the apps below them at start-up (FlowsConfig.ready): the notifications
hooks (planning, fan-out, completion, outcomes, inbox reads, email opens and clicks, cancels, the
run shown on a delivery) and the events port (cancel keys)."""

from __future__ import annotations

from apps.core import ports
from apps.flows import selectors
from apps.flows.services import engine
from apps.notifications import hooks


def install() -> None:
    hooks.register_planner(engine.flow_plan)
    hooks.on_fan_out(engine.flow_take_over)
    hooks.on_completion_filter(engine.flow_completion_filter)
    hooks.on_delivery_outcome(engine.flows_on_outcomes)
    hooks.on_inbox_read(engine.flows_on_inbox_read)
    hooks.on_engagement(engine.flows_on_engagement)
    hooks.on_cancel(engine.flows_on_cancelled)
    hooks.on_delivery_detail(selectors.flow_run_for_delivery)
    ports.on_event_recorded(engine.flows_on_event)
