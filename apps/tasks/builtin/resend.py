"""`signalbox.notifications.resend_deliveries`: replays a tenant's failed and dead deliveries matching a filter.

The replay itself belongs to the notifications app (`deliveries_replay` in its services): this
task only selects, chunks and reports progress. It is safe to retry: a replayed delivery is no
longer failed or dead, so a second run does not select it again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework import serializers

from apps.core.actors import Actor
from apps.tasks.builtin.filters import DeliveryFilterInput, deliveries_matching
from apps.tasks.registry import tracked_task
from apps.tasks.runtime import TaskContext, TaskError

REPLAYABLE = ("failed", "dead")
CHUNK = 500


class ResendInput(DeliveryFilterInput):
    limit = serializers.IntegerField(
        min_value=1, max_value=100_000, default=10_000, help_text="At most this many deliveries."
    )

    def status_choices(self) -> list[tuple[str, str]]:
        return [(value, label) for value, label in super().status_choices() if value in REPLAYABLE]


def _replay_service() -> Callable[..., int]:
    try:
        from apps.notifications.services import deliveries_replay
    except ImportError as exc:
        raise TaskError("replay_unavailable", "Delivery replay is not available on this installation.") from exc
    return deliveries_replay  # type: ignore[no-any-return]


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
    replay = _replay_service()
    statuses = data.get("status") or list(REPLAYABLE)
    deliveries = deliveries_matching(tenant_id=ctx.tenant_id, data={**data, "status": statuses})
    ids = list(deliveries.values_list("pk", flat=True)[: data.get("limit", 10_000)])
    total = len(ids)
    ctx.progress(0, total, "resending")
    replayed = 0
    for start in range(0, total, CHUNK):
        ctx.check_cancelled()
        chunk = ids[start : start + CHUNK]
        replayed += int(
            replay(tenant_id=ctx.tenant_id, delivery_ids=chunk, actor=Actor(kind="task", id=str(ctx.execution_id)))
        )
        ctx.progress(start + len(chunk), total, "resending")
    return {"matched": total, "replayed": replayed}
