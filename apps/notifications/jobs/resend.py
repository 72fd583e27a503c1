"""`signalbox.notifications.resend_deliveries`: replays a tenant's failed and dead deliveries matching a filter.

The replay itself is `deliveries_replay` (services/sending.py): this task only selects, chunks
and reports progress. It is safe to retry: a replayed delivery is no longer failed or dead, so a
second run does not select it again.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.core.actors import Actor
from apps.notifications.jobs.filters import DeliveryFilterInput, deliveries_matching
from apps.notifications.services.sending import deliveries_replay
from apps.tasks.registry import tracked_task
from apps.tasks.runtime import TaskContext

REPLAYABLE = ("failed", "dead")
CHUNK = 500


class ResendInput(DeliveryFilterInput):
    limit = serializers.IntegerField(
        min_value=1, max_value=100_000, default=10_000, help_text="At most this many deliveries."
    )

    def status_choices(self) -> list[tuple[str, str]]:
        return [(value, label) for value, label in super().status_choices() if value in REPLAYABLE]


@tracked_task(
    name="signalbox.notifications.resend_deliveries",
    queue="tasks",
    input=ResendInput,
    max_retries=3,
    retry_backoff=10,
    soft_time_limit=900,
    time_limit=960,
)
def resend_deliveries(ctx: TaskContext, data: dict[str, Any]) -> dict[str, int]:
    """Resends failed and dead deliveries matching a filter (status, channel, notification, time)."""
    statuses = data.get("status") or list(REPLAYABLE)
    deliveries = deliveries_matching(tenant_id=ctx.tenant_id, data={**data, "status": statuses})
    ids = list(deliveries.values_list("pk", flat=True)[: data.get("limit", 10_000)])
    total = len(ids)
    ctx.progress(0, total, "resending")
    replayed = 0
    for start in range(0, total, CHUNK):
        ctx.check_cancelled()
        chunk = ids[start : start + CHUNK]
        actor = Actor(kind="task", id=str(ctx.execution_id))
        replayed += int(deliveries_replay(tenant_id=ctx.tenant_id, delivery_ids=chunk, actor=actor))
        ctx.progress(start + len(chunk), total, "resending")
    return {"matched": total, "replayed": replayed}
