"""A worker's /metrics: its prefork children's metrics summed (multiprocess mode), the dead reaped."""

from __future__ import annotations

import os
import signal

import pytest
from prometheus_client import REGISTRY

from tests.conftest import wait_for
from tests.observability.conftest import SLOW_JOB, consumers_paused, free_port, node_name, runs, scrape, value

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def metrics_worker(django_db_setup, django_db_blocker, worker_logs, tmp_path_factory):
    """One maintenance worker for this module: two children, its own multiprocess directory and port."""
    from tests.conftest import WorkerProcess, worker_env

    port = free_port()
    directory = tmp_path_factory.mktemp("prometheus")
    env = worker_env(SIGNALBOX_TEST_TASKS="1", PROMETHEUS_MULTIPROC_DIR=str(directory), WORKER_METRICS_PORT=str(port))
    with django_db_blocker.unblock(), consumers_paused("maintenance"):
        worker = WorkerProcess(env, worker_logs / "metrics-worker.log", "maintenance", concurrency=2)
        worker.start()
        worker.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
        worker.metrics_dir = directory  # type: ignore[attr-defined]
        try:
            wait_for(lambda: _scrapes(worker.metrics_url), timeout=20, message="the metrics endpoint")  # type: ignore[attr-defined]
            yield worker
        finally:
            worker.stop()


def _scrapes(url: str) -> bool:
    try:
        scrape(url)
        return True
    except OSError:
        return False


def test_task_metrics_are_summed_over_the_workers_children(metrics_worker, runs_table):
    from workers.celery import app

    labels = {"task": SLOW_JOB, "queue": "maintenance"}
    published_before = REGISTRY.get_sample_value("signalbox_celery_tasks_published_total", labels) or 0.0
    before = scrape(metrics_worker.metrics_url)

    results = [app.send_task(SLOW_JOB, args=[f"m-{i}", 0.3], queue="maintenance") for i in range(6)]
    assert [r.get(timeout=30) for r in results] == [f"m-{i}" for i in range(6)]

    # Both children ran some: the endpoint must show the sum, not one child's share.
    assert len({pid for _, pid in runs("completed")}) == 2
    after = scrape(metrics_worker.metrics_url)
    assert (
        value(after, "signalbox_celery_tasks_total", state="success", **labels)
        - value(before, "signalbox_celery_tasks_total", state="success", **labels)
        == 6
    )
    runtime = "signalbox_celery_task_runtime_seconds"
    assert value(after, f"{runtime}_count", **labels) - value(before, f"{runtime}_count", **labels) == 6
    assert value(after, f"{runtime}_bucket", le="0.25", **labels) == value(
        before, f"{runtime}_bucket", le="0.25", **labels
    )
    assert value(after, "signalbox_worker_active_tasks", queue="maintenance") == 0
    # And the publishing side (this process) counted what it sent.
    assert REGISTRY.get_sample_value("signalbox_celery_tasks_published_total", labels) == published_before + 6


def test_a_running_task_counts_as_active_until_its_child_is_killed(metrics_worker, runs_table):
    from workers.celery import app

    job = app.send_task(SLOW_JOB, args=["long", 30], queue="maintenance")
    wait_for(lambda: runs("started"), timeout=20, message="the job to start")
    (_, victim), *_ = runs("started")
    wait_for(
        lambda: value(scrape(metrics_worker.metrics_url), "signalbox_worker_active_tasks", queue="maintenance") == 1
    )

    os.kill(victim, signal.SIGKILL)
    # The message goes back on the queue (reject_on_worker_lost) and a new child starts it again.
    wait_for(lambda: len(runs("started")) == 2, timeout=30, message="the job to be redelivered")
    samples = scrape(metrics_worker.metrics_url)

    # Without reaping, the killed child's +1 would stay forever: 2 running instead of 1.
    assert value(samples, "signalbox_worker_active_tasks", queue="maintenance") == 1
    assert not list(metrics_worker.metrics_dir.glob(f"gauge_live*_{victim}.db"))
    app.control.revoke(job.id, terminate=True, signal="SIGKILL")


def test_a_child_that_exits_marks_itself_dead(metrics_worker, runs_table):
    """Last in this module: it leaves the shared worker with one child."""
    from workers.celery import app

    wait_for(lambda: len(metrics_worker.children()) == 2, message="two children")
    # One job per child, so both children then have live gauges: the second is sent once the first
    # is running (its child busy for 5 s), so only the other child can take it. Two sent at once
    # could both go to one child when the other had just been started.
    first = app.send_task(SLOW_JOB, args=["x-0", 5], queue="maintenance")
    wait_for(lambda: any(key == "x-0" for key, _ in runs("started")), timeout=20, message="x-0 to start")
    second = app.send_task(SLOW_JOB, args=["x-1", 1.5], queue="maintenance")
    [r.get(timeout=30) for r in (first, second)]
    children = set(metrics_worker.children())
    assert {pid for key, pid in runs("completed") if key.startswith("x-")} == children
    assert all(list(metrics_worker.metrics_dir.glob(f"gauge_livesum_{pid}.db")) for pid in children)

    node = node_name(metrics_worker)
    app.control.pool_shrink(1, destination=[node])
    wait_for(lambda: len(metrics_worker.children()) == 1, timeout=20, message="a child to exit")
    (gone,) = children - set(metrics_worker.children())
    # No scrape in between: the child removed its own live gauges on the way out.
    assert not list(metrics_worker.metrics_dir.glob(f"gauge_livesum_{gone}.db"))
    assert list(metrics_worker.metrics_dir.glob(f"counter_{gone}.db")), "its counters stay, they are history"
