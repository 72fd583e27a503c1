"""Code written against Django's Tasks API (`@task`, `.enqueue()`, `.get_result()`) runs on Signalbox, tracked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from django_tasks import TaskResultStatus, default_task_backend, task_backends
from django_tasks.exceptions import InvalidTaskError, TaskResultDoesNotExist

from apps.core import context
from apps.tasks.django_tasks_backend import SignalboxBackend
from apps.tasks.models import TaskExecution
from apps.tasks.testing import add, add_on_second_attempt, refuse
from tests.conftest import wait_for

pytestmark = pytest.mark.worker


def _finished(result):
    def check():
        result.refresh()
        return result.is_finished

    wait_for(check, timeout=30, interval=0.1, message=f"django task {result.id}")
    return result


def test_the_signalbox_backend_is_the_default():
    assert isinstance(task_backends["default"], SignalboxBackend)


def test_enqueue_runs_on_the_worker_and_get_result_reads_the_execution(api, tenant, worker):
    with context.bound(tenant=str(tenant.pk)):  # as in a request of this tenant
        result = add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY

    _finished(result)

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.attempts == 1
    fetched = add.get_result(result.id)
    assert (fetched.return_value, fetched.args) == (5, [2, 3])
    polled = api.get(f"/api/v1/tasks/{result.id}/").json()  # the tenant polls it like any task
    assert (polled["kind"], polled["name"], polled["status"]) == ("django", "apps.tasks.testing.add", "succeeded")
    assert polled["result"] == 5


def test_a_failing_attempt_is_retried_and_the_context_sees_the_attempt(worker):
    result = add_on_second_attempt.enqueue(1, 1)

    _finished(result)

    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"sum": 2, "attempt": 2}
    assert TaskExecution.objects.get(pk=result.id).tenant is None  # no request, no tenant: admin only


def test_a_refusal_is_a_failed_result_with_its_exception_and_can_be_replayed(api, tenant, worker):
    with context.bound(tenant=str(tenant.pk)):
        result = refuse.enqueue()

    _finished(result)

    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "apps.tasks.runtime.TaskError"
    assert "This task refuses to run." in result.errors[0].traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    replay = api.post(f"/api/v1/tasks/{result.id}/retry/")
    assert replay.status_code == 202
    assert (replay.json()["kind"], replay.json()["name"]) == ("django", "apps.tasks.testing.refuse")
    assert refuse.get_result(replay.json()["id"]).id == replay.json()["id"]


def test_run_after_defers_the_start(worker):
    result = add.using(run_after=timezone.now() + timedelta(seconds=2)).enqueue(1, 2)

    row = TaskExecution.objects.get(pk=result.id)
    assert row.run_after >= row.created_at + timedelta(seconds=1)
    _finished(result)
    started_at = TaskExecution.objects.get(pk=result.id).started_at
    assert started_at is not None and started_at >= row.run_after - timedelta(milliseconds=500)


def test_an_enqueue_in_a_rolled_back_transaction_leaves_nothing(transactional_db):
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        result = add.enqueue(1, 1)
        raise Rollback

    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(result.id)
    assert not TaskExecution.objects.exists()


def test_unsupported_options_are_refused_up_front():
    with pytest.raises(InvalidTaskError):
        add.using(priority=10)
    with pytest.raises(InvalidTaskError):
        add.using(queue_name="nowhere")
