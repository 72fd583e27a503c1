"""A broker restart never ends a worker: Redis killed with `kill -9` in the middle of a fan-out and
its sends, with and without persistence, then started again.

Each test runs its own `redis-server` on a free port as the broker of a worker it starts (and of
this process's publishing), so the machine's Redis is never touched. The worker's main process
must still be running at the end, having finished the notification: every delivery settled,
each email reaching the provider sandbox once (counted by delivery id), nothing lost.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis
from kombu.common import ignore_errors

from apps.notifications.models import DeliveryAttempt, Notification
from sandbox.testing import SandboxClient
from tests.conftest import wait_for
from tests.reliability.conftest import (
    RedisServer,
    assert_delivered_once,
    broker_at,
    node_of,
    people,
    ready,
    reset_pools,
    send,
    settle,
)

BULK = "notifications.bulk"
# Many small chunks and batches, so the broker dies while chunks and sends are still queued and running.
SMALL = {
    "NOTIFICATIONS_FANOUT_CHUNK_SIZE": "4",
    "NOTIFICATIONS_SEND_BATCH_SIZE": "4",
    "NOTIFICATIONS_RETRY_BASE_SECONDS": "0.2",
}


@pytest.fixture
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    server = RedisServer(tmp_path, persistent=request.param)
    server.start()
    yield server
    server.stop()


def alive(worker: Any) -> bool:
    return worker.proc.poll() is None


def idle(worker: Any) -> bool:
    from workers.celery import app

    try:
        node = node_of(worker, timeout=1.0)
        active = app.control.inspect(destination=[node], timeout=1.0).active() or {} if node else {}
    except (OSError, ValueError, RuntimeError, redis.RedisError):
        reset_pools()
        return False
    return bool(active) and not any(active.values())


def test_a_channel_whose_broker_connection_was_collected_fails_with_a_connection_error(tmp_path: Path):
    """The crash itself, without a worker: what the consumer does on a lost broker (collect, then
    close) with a message still unacknowledged, and that message's late ack afterwards."""
    from workers import broker

    broker.install()  # as every worker does when it starts (worker_init)
    server = RedisServer(tmp_path)
    server.start()
    try:
        connection = kombu.Connection(server.url)
        queue = kombu.Queue("survival", routing_key="survival")
        with connection.Producer() as producer:
            producer.publish({"n": 1}, routing_key="survival", declare=[queue])
        held: list[Any] = []
        connection.Consumer(queue, callbacks=[lambda body, message: held.append(message)]).consume()
        connection.drain_events(timeout=5)
        server.stop()
        # collect() detaches the transport; a channel it could not close in time stays open
        connection._do_close_transport()

        ignore_errors(connection, connection.close)  # was: AttributeError ... 'hostname'
        with pytest.raises(connection.connection_errors):  # was: AttributeError, which ends the worker
            held[0].ack()
    finally:
        server.stop()


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.parametrize("broker", [False, True], ids=["without-persistence", "with-persistence"], indirect=True)
def test_a_broker_killed_at_the_start_of_a_fan_out_never_ends_the_worker(
    broker: RedisServer, sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any
):
    with broker_at(broker.url):
        # Given a worker on a Redis of our own, fanning out a notification whose emails go slowly
        worker = ready(start_worker(queues=BULK, concurrency=2, CELERY_BROKER_URL=broker.url, **SMALL))
        sandbox_client.add_fault("sendgrid", delay_ms=1500)
        notification = send(sandboxed, people(24), ["email", "in_app"])
        # (the sandbox records an email when it arrives and answers 1.5 s later: one is in flight)
        wait_for(lambda: sandbox_client.messages("sendgrid"), timeout=30, message="the first emails in flight")

        # When Redis is killed (kill -9) in the middle of it, and started again a few seconds later
        broker.stop()
        time.sleep(4.0)
        broker.start()
        sandbox_client.clear_faults()

        # Then the worker reconnects and goes on: its main process never exits
        wait_for(lambda: not alive(worker) or idle(worker), timeout=90, interval=0.5, message="the worker to go idle")
        assert alive(worker), f"the worker exited; see {worker.proc.args}"
        # ... and the sweeper puts back what the broker lost; everything is sent exactly once
        settle([notification.pk], sweep_first=True, timeout=90, idle=lambda: idle(worker))
        assert alive(worker)
    counted = assert_delivered_once(sandbox_client, [notification.pk], max_interrupted=0)
    assert counted == {"sent": 24, "delivered": 24}
    assert not DeliveryAttempt.objects.filter(delivery__notification=notification, outcome="lost").exists()
    assert Notification.objects.get(pk=notification.pk).status == "completed"
