"""How long finished task executions are kept: a tenant's `retention_days["task_results"]` and
`["task_dead"]` (validated like every retention setting) over the task type's and the platform's
TTLs. Driven through the services in this process: no worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.tasks.models import Status, TaskExecution
from apps.tasks.services.executions import (
    execution_create_for_intent,
    execution_end,
    execution_mark_failed,
    execution_succeed,
)
from apps.tasks.services.maintenance import executions_purge_expired

pytestmark = pytest.mark.django_db

# The test settings keep the platform's defaults: RESULT_TTL_DAYS 7, DEAD_TTL_DAYS 30.
RESULT_DAYS, DEAD_DAYS = 7, 30


def _keep(tenant: Any, **days: Any) -> None:
    tenant.settings = {**tenant.settings, "retention_days": days}
    tenant.save(update_fields=["settings"])


def _running(tenant: Any) -> TaskExecution:
    return TaskExecution.objects.create(
        tenant=tenant, name="signalbox.testing.count", status=Status.RUNNING, attempts=1, started_at=timezone.now()
    )


def _succeed(tenant: Any, ttl_days: int | None = None) -> TaskExecution:
    execution = _running(tenant)
    assert execution_succeed(execution=execution, value={"ok": True}, progress=(1, 1, ""), file=None, ttl_days=ttl_days)
    execution.refresh_from_db()
    return execution


def _end(tenant: Any, status: str) -> TaskExecution:
    execution = _running(tenant)
    assert execution_end(execution=execution, status=status, code="boom", message="It failed.")
    execution.refresh_from_db()
    return execution


def _kept_days(execution: TaskExecution) -> float:
    assert execution.delete_at is not None and execution.finished_at is not None
    return (execution.delete_at - execution.finished_at) / timedelta(days=1)


def test_a_tenants_task_retention_shortens_results_and_lengthens_dead_letters(tenant, other_tenant):
    _keep(tenant, task_results=2, task_dead=90)

    ours = [_succeed(tenant), _end(tenant, Status.FAILED), _end(tenant, Status.CANCELLED), _end(tenant, Status.DEAD)]
    theirs = [_succeed(other_tenant), _end(other_tenant, Status.FAILED), _end(other_tenant, Status.DEAD)]

    assert [_kept_days(e) for e in ours] == [2, 2, 2, 90]
    assert [_kept_days(e) for e in theirs] == [RESULT_DAYS, RESULT_DAYS, DEAD_DAYS]


def test_the_tenants_retention_wins_over_the_task_types_own(tenant, other_tenant):
    _keep(tenant, task_results=30)

    assert _kept_days(_succeed(tenant, ttl_days=1)) == 30
    assert _kept_days(_succeed(other_tenant, ttl_days=1)) == 1  # no setting: the task type's TTL


def test_executions_other_apps_finish_follow_the_tenants_retention_too(tenant):
    _keep(tenant, task_results="3")  # a string of digits is accepted, as for every retention setting
    execution = execution_create_for_intent(tenant=tenant, name="workflows.transition")

    assert execution_mark_failed(execution_id=execution.pk, code="conflict", message="Too late.")

    execution.refresh_from_db()
    assert _kept_days(execution) == 3


@pytest.mark.parametrize("bad", [-3, 0, "abc", 2.5, True, None])
def test_a_bad_task_retention_setting_falls_back_to_the_platforms(tenant, bad):
    _keep(tenant, task_results=bad, task_dead=bad)

    assert _kept_days(_succeed(tenant)) == RESULT_DAYS
    assert _kept_days(_end(tenant, Status.DEAD)) == DEAD_DAYS


def test_the_hourly_purge_deletes_a_tenants_results_after_its_own_retention(tenant, other_tenant):
    _keep(tenant, task_results=1)
    ours, theirs = _succeed(tenant), _succeed(other_tenant)

    purged = executions_purge_expired(now=timezone.now() + timedelta(days=2))

    assert purged == 1
    assert not TaskExecution.objects.filter(pk=ours.pk).exists()
    assert TaskExecution.objects.filter(pk=theirs.pk).exists()
