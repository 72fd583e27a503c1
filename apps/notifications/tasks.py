"""Celery tasks of the notification pipeline: thin wrappers that take ids and call a service.

Names are permanent (pinned in tests/notifications/test_tasks.py). Fan-out and send tasks are
published on the notification's priority queue (`notifications.high/default/bulk`); the
declared queue is only the fallback. The dispatcher and the sweeper run on `maintenance`.

None of them retries through Celery: a failed send is a row with `next_attempt_at`, and a task
lost with its worker is recovered by the sweeper from the database.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.notifications import hooks, jobs  # noqa: F401  (jobs registers the tracked task types it ships)
from apps.notifications.services import digests_flush, dispatch, fanout, sending


@shared_task(name="signalbox.notifications.fan_out", queue="notifications.default", ignore_result=True)
def fan_out(notification_id: str) -> None:
    """Plans the chunks of an accepted notification; runs a lone chunk right here."""
    if hooks.fan_out_taken_over(notification_id):  # a flow runs it step by step (apps.flows)
        return
    chunk_ids = fanout.notification_fan_out(notification_id=notification_id)
    if len(chunk_ids) == 1:
        fanout.fanout_chunk_run(chunk_id=chunk_ids[0])


@shared_task(name="signalbox.notifications.fan_out_chunk", queue="notifications.default", ignore_result=True)
def fan_out_chunk(chunk_id: int) -> None:
    fanout.fanout_chunk_run(chunk_id=chunk_id)


@shared_task(name="signalbox.notifications.send_batch", queue="notifications.default", ignore_result=True, bind=True)
def send_batch(self: Any, delivery_ids: list[str], notification_ids: list[str] | None = None) -> None:
    """`notification_ids` (the deliveries' notifications) let the claim prune partitions; a
    message published before they were carried has only the delivery ids, and still works."""
    queue = (self.request.delivery_info or {}).get("routing_key") or None
    sending.deliveries_send(delivery_ids=delivery_ids, queue=queue, notification_ids=notification_ids)


@shared_task(name="signalbox.notifications.dispatch_due", queue="maintenance", ignore_result=True)
def dispatch_due() -> dict[str, int]:
    return dispatch.dispatch_due()


@shared_task(name="signalbox.notifications.sweep", queue="maintenance", ignore_result=True)
def sweep() -> dict[str, int]:
    result = dispatch.sweep()
    return {
        "intents": result.intents,
        "chunks": result.chunks,
        "queued": result.queued,
        "leases": result.leases,
        "completed": result.completed,
    }


# --- Digests (apps/notifications/services/digests_flush.py; docs/scheduling.md) --------------------


@shared_task(name="signalbox.digests.flush_due", queue="digests", ignore_result=True)
def digests_flush_due() -> dict[str, int]:
    """Beat, every minute: hands due digest windows to `flush_windows` tasks in batches."""
    return digests_flush.digests_flush_due()


@shared_task(name="signalbox.digests.flush_windows", queue="digests", ignore_result=True)
def digests_flush_windows(window_ids: list[str]) -> dict[str, int]:
    """Flushes each window into one message (each in its own transaction; a duplicate does nothing)."""
    return digests_flush.digest_windows_flush(window_ids=window_ids)
