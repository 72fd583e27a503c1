"""A broker restart never ends a worker: Redis killed with `kill -9` in the middle of a fan-out and
its sends, with and without persistence, then started again.

Each test runs its own `redis-server` on a free port as the broker of a worker it starts (and of
this process's publishing), so the machine's Redis is never touched. The worker's main process
must still be running at the end, having finished the notification: every delivery settled,
each email reaching the provider sandbox once (counted by delivery id), nothing lost.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
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
    assert_delivered_once,
    broker_at,
    free_port,
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


class Broker:
    """A redis-server of this test's own; `persistent` keeps an append-only file fsynced on every
    write in `directory`, so a restart after `kill -9` finds what was queued."""

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, redis.RedisError):
                if redis.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    server = Broker(tmp_path, persistent=request.param)
    server.start()
    yield server
    server.kill()


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
    server = Broker(tmp_path, persistent=False)
    server.start()
    try:
        connection = kombu.Connection(server.url)
        queue = kombu.Queue("survival", routing_key="survival")
        with connection.Producer() as producer:
            producer.publish({"n": 1}, routing_key="survival", declare=[queue])
        held: list[Any] = []
        connection.Consumer(queue, callbacks=[lambda body, message: held.append(message)]).consume()
        connection.drain_events(timeout=5)
        server.kill()
        # collect() detaches the transport; a channel it could not close in time stays open
        connection._do_close_transport()

        ignore_errors(connection, connection.close)  # was: AttributeError ... 'hostname'
        with pytest.raises(connection.connection_errors):  # was: AttributeError, which ends the worker
            held[0].ack()
    finally:
        server.kill()


@pytest.mark.worker
@pytest.mark.slow
@pytest.mark.parametrize("broker", [False, True], ids=["without-persistence", "with-persistence"], indirect=True)
def test_a_broker_killed_at_the_start_of_a_fan_out_never_ends_the_worker(
    broker: Broker, sandboxed: Any, sandbox_client: SandboxClient, start_worker: Any
):
    with broker_at(broker.url):
        # Given a worker on a Redis of our own, fanning out a notification whose emails go slowly
        worker = ready(start_worker(queues=BULK, concurrency=2, CELERY_BROKER_URL=broker.url, **SMALL))
        sandbox_client.add_fault("sendgrid", delay_ms=1500)
        notification = send(sandboxed, people(24), ["email", "in_app"])
        # (the sandbox records an email when it arrives and answers 1.5 s later: one is in flight)
        wait_for(lambda: sandbox_client.messages("sendgrid"), timeout=30, message="the first emails in flight")

        # When Redis is killed (kill -9) in the middle of it, and started again a few seconds later
        broker.kill()
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
