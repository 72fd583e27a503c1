"""Scheduled task intents (apps/tasks): `scheduled_at` is honoured by the real worker, and a
scheduled task cancelled before its time never runs."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.tasks.models import TaskExecution
from tests.conftest import wait_for

pytestmark = pytest.mark.worker


def _start(api, **extra):
    response = api.post("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 1}, **extra})
    assert response.status_code == 202, response.json()
    return response.json()


def test_a_scheduled_task_does_not_start_before_its_time(api, worker):
    at = timezone.now() + timedelta(seconds=3)
    started = _start(api, scheduled_at=at.isoformat())

    time.sleep(1)
    assert TaskExecution.objects.get(pk=started["id"]).started_at is None
    done = wait_for(lambda: TaskExecution.objects.filter(pk=started["id"], status="succeeded").first(), timeout=30)
    assert done.started_at >= at


def test_a_scheduled_task_cancelled_before_its_time_never_runs(api, worker):
    started = _start(api, scheduled_at=(timezone.now() + timedelta(seconds=2)).isoformat())

    assert api.post(f"/api/v1/tasks/{started['id']}/cancel/").json()["status"] == "cancelled"

    time.sleep(3)
    execution = TaskExecution.objects.get(pk=started["id"])
    assert (execution.status, execution.attempts, execution.started_at) == ("cancelled", 0, None)
