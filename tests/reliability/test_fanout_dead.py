"""A fan-out chunk that can never finish ends `dead` after its attempts, instead of being retried
forever while it holds a worker process; its notification ends `failed` with the reason, and a
replay once the cause is gone finishes it.

The fault: every chunk of the notification waits on a lock this test holds (the advisory lock of
its dedup key) and fails when its worker's `lock_timeout` runs out, every time, as a chunk that
always fails would (a template past the time limit, a constraint it always breaks).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection

from apps.notifications import conf
from apps.notifications.models import Delivery, FanoutChunk, Notification
from apps.notifications.services.dispatch import sweep
from apps.notifications.services.fanout import fanout_chunks_replay
from sandbox.testing import SandboxClient
from tests.conftest import wait_for, worker_env
from tests.reliability.conftest import assert_delivered_once, far_future, people, ready, send, settle

pytestmark = [pytest.mark.worker, pytest.mark.slow]

BULK = "notifications.bulk"
LIMITED = {"NOTIFICATIONS_FANOUT_CHUNK_SIZE": "2", "NOTIFICATIONS_FANOUT_CHUNK_MAX_ATTEMPTS": "2"}


def hold_dedup_lock(tenant_id: Any, key: str) -> psycopg.Connection[Any]:
    """Takes the advisory lock fan-out takes for a dedup key, on a connection of its own."""
    db = connection.settings_dict
    blocker = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres", dbname=db["NAME"]
    )
    blocker.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [f"dedup:{tenant_id}:{key}"])
    return blocker


def test_a_chunk_that_never_finishes_ends_dead_and_its_notification_failed_with_the_reason(
    sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any, own_queue: Any
):
    # Given chunks that wait for a lock held here
    own_queue(BULK)
    # (its sessions give up waiting for a lock after 1 s: the chunk fails every time, quickly)
    url = worker_env()["DATABASE_URL"] + "?options=-c%20lock_timeout%3D1000"
    ready(start_worker(queues=BULK, concurrency=1, DATABASE_URL=url, **LIMITED))
    blocker = hold_dedup_lock(sandboxed.pk, "weekly")
    try:
        notification = send(sandboxed, people(4), ["email", "in_app"], dedup_key="weekly", dedup_window_seconds=60)

        # When each run fails (and the sweeper republishes the chunk each time)
        clock = [far_future()]

        def settled() -> bool:
            clock[0] += timedelta(seconds=conf.get().SWEEP_CHUNK_AFTER_SECONDS + 1)  # each sweep republishes
            sweep(now=clock[0])
            return Notification.objects.get(pk=notification.pk).status not in ("accepted", "fanning_out")

        wait_for(settled, timeout=90, interval=2.0, message="the notification to stop fanning out")
    finally:
        blocker.close()

    # Then each chunk is dead after its 2 attempts, and the notification failed, saying why
    chunks = list(FanoutChunk.objects.filter(notification=notification).order_by("index"))
    assert len(chunks) == 2
    assert all(c.dead_at is not None and c.done_at is None and c.attempts >= 2 for c in chunks), [
        (c.attempts, c.dead_at, c.done_at) for c in chunks
    ]
    assert all("after 2 attempts" in c.last_error for c in chunks), [c.last_error for c in chunks]
    failed = Notification.objects.get(pk=notification.pk)
    assert failed.status == "failed"
    assert failed.error.startswith("2 of 2 fan-out chunks are dead"), failed.error
    assert not Delivery.objects.filter(notification=notification).exists()
    # ... and the sweeper leaves dead chunks alone
    assert sweep(now=clock[0] + timedelta(days=1)).chunks == 0

    # When the cause is gone and the dead chunks are replayed, everything is sent once
    assert fanout_chunks_replay(notification=failed) == 2
    settle([notification.pk], timeout=60)
    assert assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=0) == {"sent": 4, "delivered": 4}
