"""Nothing stays stuck: killed workers, lost publishes, stale messages, hard time limits, expiry."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.tasks.models import Status, TaskExecution
from apps.tasks.runtime import Superseded, TaskContext
from apps.tasks.services.executions import execution_claim
from apps.tasks.services.maintenance import executions_purge_expired, executions_sweep
from tests.conftest import wait_for
from tests.tasks.conftest import poll_finished, poll_until, start_task

pytestmark = pytest.mark.worker

SHORT_LEASE = {"SIGNALBOX_TASK_LEASE_SECONDS": "2"}


def _lease_lapsed(execution_id: str) -> bool:
    row = TaskExecution.objects.get(pk=execution_id)
    return row.status == Status.RUNNING and row.lease_expires_at is not None and row.lease_expires_at < timezone.now()


def test_a_task_whose_worker_process_is_killed_resumes_on_its_redelivered_message(api, own_tasks_worker):
    worker = own_tasks_worker(**SHORT_LEASE)
    started = start_task(api, "signalbox.testing.count", {"steps": 20, "delay": 0.1})
    running = poll_until(api, started["id"], lambda body: body["progress"]["current"] >= 5)
    assert running["status"] == "running"

    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)

    # The parent requeues the message (reject_on_worker_lost); it waits for the dead attempt's
    # lease to lapse, then takes over, counting the lost attempt.
    done = poll_finished(api, started["id"], timeout=45)
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    assert done["result"]["attempt"] == 2
    assert done["progress"]["current"] == 20


def test_a_worker_lost_for_good_is_recovered_by_the_sweeper_and_a_new_worker(api, own_tasks_worker):
    worker = own_tasks_worker(**SHORT_LEASE)
    started = start_task(api, "signalbox.testing.count", {"steps": 20, "delay": 0.1})
    poll_until(api, started["id"], lambda body: body["progress"]["current"] >= 3)

    assert worker.proc is not None
    children = worker.children()
    os.kill(worker.proc.pid, signal.SIGSTOP)  # the parent must not get to requeue anything
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait()

    wait_for(lambda: _lease_lapsed(started["id"]), timeout=10, message="the lease to lapse")
    assert api.get(started["url"]).json()["status"] == "running"  # nobody else will touch it

    report = executions_sweep()

    assert report.requeued == [started["id"]]
    requeued = api.get(started["url"]).json()
    assert requeued["status"] == "retrying"
    assert requeued["error"]["code"] == "worker_lost"
    own_tasks_worker(**SHORT_LEASE)
    done = poll_finished(api, started["id"], timeout=45)
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2


def test_an_execution_committed_but_never_published_is_published_by_the_sweeper(api, tenant, worker):
    long_ago = timezone.now() - timedelta(minutes=5)
    # What the API leaves behind if it dies between COMMIT and its on_commit publish.
    execution = TaskExecution.objects.create(
        tenant=tenant,
        name="signalbox.testing.count",
        input={"steps": 2, "delay": 0.0},
        queue="tasks",
        max_attempts=3,
        created_at=long_ago,
        updated_at=long_ago,
        run_after=long_ago,
    )

    report = executions_sweep()

    assert report.published == [str(execution.pk)]
    assert poll_finished(api, str(execution.pk))["status"] == "succeeded"
    assert executions_sweep().published == []


@pytest.mark.django_db
def test_a_lost_execution_without_attempts_left_goes_dead(tenant):
    execution = TaskExecution.objects.create(
        tenant=tenant,
        name="signalbox.testing.count",
        input={"steps": 2},
        queue="tasks",
        status=Status.RUNNING,
        attempts=3,
        max_attempts=3,
        lease_expires_at=timezone.now() - timedelta(seconds=5),
    )
    dead_letters = {"kind": "task", "channel": "task"}
    before = REGISTRY.get_sample_value("signalbox_dead_letters_total", dead_letters) or 0.0

    report = executions_sweep()

    execution.refresh_from_db()
    assert report.ended == [str(execution.pk)]
    assert execution.status == Status.DEAD
    assert execution.error_code == "worker_lost"
    assert execution.delete_at is not None
    assert REGISTRY.get_sample_value("signalbox_dead_letters_total", dead_letters) == before + 1


@pytest.mark.django_db
def test_a_message_with_a_stale_dispatch_token_is_dropped(tenant):
    execution = TaskExecution.objects.create(
        tenant=tenant, name="signalbox.testing.count", input={"steps": 1}, queue="tasks", max_attempts=1
    )

    stale = execution_claim(execution_id=str(execution.pk), dispatch=str(uuid.uuid4()), worker="w", celery_task_id="c")
    current = execution_claim(
        execution_id=str(execution.pk), dispatch=str(execution.dispatch), worker="w", celery_task_id="c"
    )
    duplicate = execution_claim(
        execution_id=str(execution.pk), dispatch=str(execution.dispatch), worker="w", celery_task_id="c"
    )

    assert (stale.execution, stale.reason) == (None, "superseded")
    assert current.execution is not None and current.execution.attempts == 1
    # The same message twice (a sweeper republish racing the first): wait for the live lease, never run twice.
    assert duplicate.execution is None and duplicate.defer_seconds is not None


@pytest.mark.django_db
def test_a_takeover_supersedes_the_old_attempt_should_it_still_be_alive(tenant):
    running = TaskExecution.objects.create(
        tenant=tenant, name="signalbox.testing.count", input={"steps": 5}, queue="tasks", status=Status.RUNNING,
        attempts=1, max_attempts=3, lease_expires_at=timezone.now() - timedelta(seconds=1),
    )  # fmt: skip
    slow_attempt = TaskContext(running)  # its heartbeat was lost to a database blip, not a dead process

    takeover = execution_claim(
        execution_id=str(running.pk), dispatch=str(running.dispatch), worker="w2", celery_task_id="c2"
    )

    assert takeover.execution is not None and takeover.execution.attempts == 2
    with pytest.raises(Superseded):
        slow_attempt.progress(1, 5)


def test_the_hard_time_limit_ends_a_task_that_ignores_its_soft_limit(api, worker):
    started = start_task(api, "signalbox.testing.hung")

    done = poll_finished(api, started["id"], timeout=30)

    assert done["status"] == "failed"
    assert done["error"]["code"] == "timeout"
    assert done["attempts"] == 1


@pytest.mark.django_db
def test_expired_executions_and_their_files_are_purged(tenant):
    now = timezone.now()
    path = default_storage.save(f"tasks/{tenant.pk}/old/report.csv", ContentFile(b"a,b\n"))
    expired = TaskExecution.objects.create(
        tenant=tenant, name="signalbox.testing.report_file", status=Status.SUCCEEDED, result_file=path,
        delete_at=now - timedelta(minutes=1),
    )  # fmt: skip
    kept = TaskExecution.objects.create(
        tenant=tenant, name="signalbox.testing.count", status=Status.SUCCEEDED, delete_at=now + timedelta(days=1)
    )
    running = TaskExecution.objects.create(tenant=tenant, name="signalbox.testing.count", status=Status.RUNNING)

    assert executions_purge_expired() == 1

    assert not TaskExecution.objects.filter(pk=expired.pk).exists()
    assert not default_storage.exists(path)
    assert set(TaskExecution.objects.values_list("pk", flat=True)) == {kept.pk, running.pk}
