"""What the flows app hands the platform's upkeep: its periodic jobs (registered by
`FlowsConfig.ready()`; core knows none of it)."""

from __future__ import annotations

from apps.core.periodic import PeriodicJob

PERIODIC_JOBS = (
    PeriodicJob(
        name="flows: dispatch due runs",
        task="signalbox.flows.dispatch_due",
        every_seconds=5,
        description="Publishes the flow engine's advance task when flow runs are due (delays, waiting branches).",
    ),
    PeriodicJob(
        name="flows: sweep runs",
        task="signalbox.flows.sweep",
        every_seconds=30,
        description="Gives back flow runs whose worker died; ends runs of cancelled flows and finished instances.",
    ),
)
