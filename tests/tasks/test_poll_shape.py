"""The poll renders an execution by hand (`execution_representation`, the API's hottest read); these pin
it to what `TaskExecutionSerializer` (the schema's shape, and every other route's) renders, state by state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.tasks.models import TaskExecution
from apps.tasks.selectors import execution_for_poll, executions_for_api
from apps.tasks.serializers import TaskExecutionSerializer, execution_representation
from apps.tasks.services.executions import task_start

pytestmark = pytest.mark.django_db


def _both(execution: TaskExecution, *, staff: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    by_hand = execution_for_poll(tenant_id=execution.tenant_id, execution_id=execution.pk)
    by_orm = executions_for_api().get(pk=execution.pk)
    assert by_hand is not None
    serialized = dict(TaskExecutionSerializer(by_orm, context={"staff": staff}).data)
    return execution_representation(by_hand, staff=staff), serialized


@pytest.mark.parametrize("staff", [False, True])
def test_a_queued_scheduled_task_renders_as_the_serializer_does(tenant: Any, staff: bool):
    execution = task_start(
        tenant=tenant,
        name="signalbox.testing.count",
        input={"steps": 3, "nested": {"a": [1, 2]}},
        scheduled_at=timezone.now() + timedelta(hours=1),
    )

    by_hand, serialized = _both(execution, staff=staff)

    assert by_hand == serialized
    assert by_hand["next_attempt_at"] is not None and by_hand["scheduled_at"].endswith("Z")


@pytest.mark.parametrize("staff", [False, True])
def test_a_failed_task_retried_with_progress_and_an_error_renders_as_the_serializer_does(tenant: Any, staff: bool):
    failed = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})
    now = timezone.now()
    TaskExecution.objects.filter(pk=failed.pk).update(
        status="failed",
        progress_current=7,
        progress_total=9,
        progress_message="almost",
        error_code="internal_error",
        error_message="It broke.",
        error_exception="RuntimeError",
        error_traceback="Traceback …",
        started_at=now - timedelta(seconds=3),
        finished_at=now,
        delete_at=now + timedelta(days=7),
        cancel_requested_at=now,
        result={"partial": True},
    )
    retry = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})
    TaskExecution.objects.filter(pk=retry.pk).update(retry_of=failed)

    by_hand, serialized = _both(failed, staff=staff)
    assert by_hand == serialized
    assert by_hand["retried_as"] == str(retry.pk) and by_hand["progress"]["percent"] == 77.8
    assert ("traceback" in by_hand["error"]) is staff

    by_hand, serialized = _both(TaskExecution.objects.get(pk=retry.pk), staff=staff)
    assert by_hand == serialized and by_hand["retry_of"] == str(failed.pk) and by_hand["retried_as"] is None


def test_a_succeeded_task_with_a_file_renders_as_the_serializer_does(tenant: Any):
    execution = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})
    TaskExecution.objects.filter(pk=execution.pk).update(
        status="succeeded", result={"rows": 2}, result_file="exports/x.csv", finished_at=timezone.now()
    )

    by_hand, serialized = _both(execution, staff=False)

    assert by_hand == serialized and by_hand["download_url"].endswith("/download/")


def test_another_tenants_execution_is_not_read(tenant: Any, other_tenant: Any):
    execution = task_start(tenant=tenant, name="signalbox.testing.count", input={"steps": 1})

    assert execution_for_poll(tenant_id=other_tenant.pk, execution_id=execution.pk) is None
