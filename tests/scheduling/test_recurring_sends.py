"""Recurring notifications: a schedule of kind `notification` (the tasks app's schedules, through
its kind seam), stored as a django-celery-beat periodic task scoped to the tenant, paused and
resumed through the API, and fired once per tick even by two beats."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connections
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from apps.notifications.models import Notification, SinkRecord
from apps.tasks.models import Schedule, TaskExecution
from apps.tasks.services.schedules import schedule_fire
from tests.conftest import wait_for

WEEKLY_REPORT: dict[str, Any] = {
    "name": "weekly order report",
    "kind": "notification",
    "target": {
        "template": "order_shipped",
        "payload": {"order_id": "weekly"},
        "recipients": ["user-0", "user-1"],
        "channels": ["email"],
    },
    "cron": "0 8 * * 1",
    "timezone": "America/New_York",
}
HOURLY = {**WEEKLY_REPORT, "name": "hourly", "cron": "0 * * * *"}


def _create(api, body):
    response = api.post("/api/v1/schedules/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.mark.django_db
def test_a_notification_schedule_is_a_beat_periodic_task_of_its_tenant(api, tenant, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(2)

    created = _create(api, WEEKLY_REPORT)

    assert created["kind"] == "notification"
    assert created["target"]["template"] == "order_shipped"
    periodic = PeriodicTask.objects.get(name=f"schedule:{created['id']}")
    assert periodic.task == "signalbox.tasks.run_schedule"
    assert json.loads(periodic.kwargs) == {"schedule_id": created["id"]}
    assert periodic.crontab.hour == "8" and str(periodic.crontab.timezone) == "America/New_York"
    assert periodic.description.startswith(f"Tenant {tenant.pk}:")
    assert created["next_run_at"] is not None

    # Paused and resumed through the API: beat's row follows
    assert api.post(f"/api/v1/schedules/{created['id']}/pause/").status_code == 200
    assert PeriodicTask.objects.get(pk=periodic.pk).enabled is False
    assert schedule_fire(schedule_id=created["id"]) is None  # a paused schedule fires nothing
    assert api.post(f"/api/v1/schedules/{created['id']}/resume/").status_code == 200
    assert PeriodicTask.objects.get(pk=periodic.pk).enabled is True


@pytest.mark.django_db
def test_a_notification_schedule_is_validated_like_a_send(api, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(1)

    unknown_template = _body(template="nope")
    response = api.post("/api/v1/schedules/", unknown_template, format="json")
    assert response.status_code == 400
    assert "template" in response.json()["fields"]["target"]

    missing_variable = _body(payload={})
    response = api.post("/api/v1/schedules/", missing_variable, format="json")
    assert "payload" in response.json()["fields"]["target"]

    unknown_recipient = _body(recipients=["nobody"])
    assert "recipients" in api.post("/api/v1/schedules/", unknown_recipient, format="json").json()["fields"]["target"]

    stray = _body(when="now")
    assert api.post("/api/v1/schedules/", stray, format="json").json()["code"] == "validation_error"
    assert not Schedule.objects.exists()


def _body(**target):
    base = dict(WEEKLY_REPORT["target"])
    base["recipients"] = ["user-0"]
    base.update(target)
    return {**WEEKLY_REPORT, "target": base}


@pytest.mark.django_db
def test_another_tenants_notification_schedule_is_a_404(api, other_api, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(2)
    created = _create(api, WEEKLY_REPORT)
    assert other_api.get(f"/api/v1/schedules/{created['id']}/").status_code == 404
    assert other_api.post(f"/api/v1/schedules/{created['id']}/pause/").status_code == 404


@pytest.mark.worker
def test_two_beats_firing_one_tick_send_the_notification_once(
    worker, api, recording_tenant, make_template, make_recipients
):
    # Given an hourly notification schedule, and two beat processes started by mistake
    make_template(default_channels=["email"])
    make_recipients(2)
    created = _create(api, HOURLY)
    beats = [DatabaseScheduler(app=_app(), lazy=True) for _ in range(2)]

    # When both apply the same tick
    for beat in beats:
        beat.apply_entry(beat.schedule[f"schedule:{created['id']}"], producer=None)

    # Then one run, one notification, one email per recipient
    run = wait_for(lambda: TaskExecution.objects.filter(schedule_id=created["id"], status="succeeded").first())
    records = wait_for(lambda: (rows := list(SinkRecord.objects.all())) and len(rows) >= 2 and rows, timeout=30)
    assert sorted(r.to for r in records) == ["user-0@example.com", "user-1@example.com"]
    assert TaskExecution.objects.filter(schedule_id=created["id"]).count() == 1
    notification = Notification.objects.get()
    assert run.result["notification"] == str(notification.pk)
    assert run.name == "signalbox.notifications.scheduled_send"
    assert run.scheduled_for.minute == 0 and run.scheduled_for.second == 0
    assert notification.metadata["schedule"] == {"id": created["id"], "tick": run.scheduled_for.isoformat()}
    assert notification.idempotency_key.startswith(f"schedule:{created['id']}:")
    # ...the run is polled like any task
    polled = api.get(f"/api/v1/tasks/{run.pk}/").json()
    assert polled["status"] == "succeeded" and polled["schedule"] == created["id"]
    # ...and the dispatcher called again for that tick creates nothing
    assert schedule_fire(schedule_id=created["id"], now=run.scheduled_for) is None
    assert Notification.objects.count() == 1


@pytest.mark.worker
def test_two_dispatchers_racing_on_one_tick_record_one_notification(worker, api, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(2)
    created = _create(api, HOURLY)
    tick_time = datetime(2030, 1, 1, 10, 0, 30, tzinfo=UTC)
    results: list[object] = []
    barrier = threading.Barrier(2)

    def fire() -> None:
        try:
            barrier.wait()
            results.append(schedule_fire(schedule_id=created["id"], now=tick_time))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(1 for r in results if r is not None) == 1
    assert Notification.objects.count() == 1
    wait_for(lambda: Notification.objects.filter(status="completed").exists(), timeout=30)
    assert TaskExecution.objects.filter(schedule_id=created["id"]).count() == 1


@pytest.mark.django_db
def test_a_schedule_whose_template_was_archived_records_a_failed_run(api, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(2)
    created = _create(api, HOURLY)
    assert api.delete("/api/v1/templates/order_shipped/").status_code == 204

    run = schedule_fire(schedule_id=created["id"])

    assert run is not None and run.status == "failed"
    assert run.error_code == "validation_error"
    assert not Notification.objects.exists()


def _app():
    from workers.celery import app

    return app
