"""Schedules: cron and interval runs of a task, through django-celery-beat, each run a pollable execution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from apps.tasks.models import Schedule, TaskExecution
from apps.tasks.services.schedules import schedule_fire, schedule_tick
from tests.conftest import wait_for
from tests.tasks.conftest import poll_finished

NIGHTLY = {
    "name": "nightly count",
    "target": {"task": "signalbox.testing.count", "input": {"steps": 2}},
    "cron": "30 3 * * 1-5",
    "timezone": "Europe/Paris",
}
# Hourly, so two runs a few milliseconds apart never straddle a tick boundary.
HOURLY = {
    "name": "hourly",
    "target": {"task": "signalbox.testing.count", "input": {"steps": 1}},
    "cron": "0 * * * *",
}


def _create(api, body):
    response = api.post("/api/v1/schedules/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.mark.django_db
def test_a_cron_schedule_is_a_beat_periodic_task_in_its_timezone(api):
    created = _create(api, NIGHTLY)

    assert created["enabled"] is True
    assert created["target"] == {"task": "signalbox.testing.count", "input": {"steps": 2, "delay": 0.0}}
    assert created["next_run_at"] is not None
    periodic = PeriodicTask.objects.get(name=f"schedule:{created['id']}")
    assert periodic.task == "signalbox.tasks.run_schedule"
    assert periodic.queue == "maintenance"
    assert periodic.kwargs == f'{{"schedule_id": "{created["id"]}"}}'
    assert (periodic.crontab.minute, periodic.crontab.hour, periodic.crontab.day_of_week) == ("30", "3", "1-5")
    assert str(periodic.crontab.timezone) == "Europe/Paris"
    assert api.get("/api/v1/schedules/").json()["results"][0]["id"] == created["id"]
    assert api.get(created["url"]).json()["cron"] == "30 3 * * 1-5"


@pytest.mark.django_db
def test_bad_schedules_are_refused_with_a_reason(api):
    def refused(**changes):
        response = api.post("/api/v1/schedules/", {**NIGHTLY, **changes}, format="json")
        assert response.status_code == 400, response.json()
        return response.json()

    assert refused(cron="61 * * * *")["code"] == "invalid_cron"
    assert refused(cron="0 0 * * * *")["code"] == "invalid_cron"  # six fields
    assert refused(timezone="Mars/Olympus")["code"] == "invalid_timezone"
    assert refused(cron="", interval_seconds=5)["code"] == "interval_too_short"
    assert refused(interval_seconds=3600)["fields"] == {"cron": ["Give either cron or interval_seconds."]}
    unknown = api.post("/api/v1/schedules/", {**NIGHTLY, "target": {"task": "signalbox.nope"}}, format="json")
    assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_task"  # well formed, no such task
    bad_input = refused(target={"task": "signalbox.testing.count", "input": {"steps": -1}})
    assert bad_input["fields"] == {"target": {"input": {"steps": ["Ensure this value is greater than or equal to 1."]}}}
    assert refused(kind="carrier-pigeon")["code"] == "unknown_schedule_kind"
    assert Schedule.objects.count() == PeriodicTask.objects.filter(name__startswith="schedule:").count() == 0
    _create(api, NIGHTLY)
    duplicate = api.post("/api/v1/schedules/", NIGHTLY, format="json")
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "schedule_exists"


@pytest.mark.django_db
def test_an_interval_schedule_and_macros(api):
    hourly = _create(api, {**NIGHTLY, "cron": "", "interval_seconds": 3600, "name": "hourly"})
    daily = _create(api, {**NIGHTLY, "cron": "@daily", "name": "daily"})

    assert PeriodicTask.objects.get(name=f"schedule:{hourly['id']}").interval.every == 3600
    assert daily["cron"] == "0 0 * * *"


@pytest.mark.django_db
def test_pause_resume_update_and_delete(api):
    created = _create(api, NIGHTLY)
    name = f"schedule:{created['id']}"

    paused = api.post(f"{created['url']}pause/").json()
    assert paused["enabled"] is False and paused["next_run_at"] is None
    assert PeriodicTask.objects.get(name=name).enabled is False
    assert schedule_fire(schedule_id=created["id"]) is None  # a tick beat had already queued does nothing

    assert api.post(f"{created['url']}resume/").json()["enabled"] is True
    assert PeriodicTask.objects.get(name=name).enabled is True

    changed = api.patch(created["url"], {"cron": "0 6 * * *", "timezone": "UTC"}, format="json")
    assert changed.status_code == 200, changed.json()
    periodic = PeriodicTask.objects.get(name=name)
    assert (periodic.crontab.hour, str(periodic.crontab.timezone)) == ("6", "UTC")
    assert api.patch(created["url"], {"cron": "nonsense"}, format="json").json()["code"] == "invalid_cron"

    assert api.delete(created["url"]).status_code == 204
    assert not PeriodicTask.objects.filter(name=name).exists()
    assert api.get(created["url"]).status_code == 404


@pytest.mark.django_db
def test_another_tenants_schedule_is_a_404(api, other_api):
    created = _create(api, NIGHTLY)

    assert other_api.get(created["url"]).status_code == 404
    assert other_api.post(f"{created['url']}pause/").status_code == 404
    assert other_api.delete(created["url"]).status_code == 404
    assert other_api.get("/api/v1/schedules/").json()["results"] == []


@pytest.mark.django_db
def test_a_run_belongs_to_the_tick_it_was_fired_for_in_the_schedules_timezone(api):
    schedule = Schedule.objects.get(pk=_create(api, NIGHTLY)["id"])
    # 03:30 in Paris on a Monday in winter is 02:30 UTC.
    tick = datetime(2025, 1, 6, 2, 30, tzinfo=UTC)

    assert schedule_tick(schedule, tick + timedelta(milliseconds=300)) == tick
    assert schedule_tick(schedule, tick - timedelta(seconds=2)) == tick  # a beat clock slightly ahead
    assert schedule_tick(schedule, tick + timedelta(hours=5)) == tick
    assert schedule_tick(schedule, tick + timedelta(days=1)) == tick + timedelta(days=1)


@pytest.mark.worker
def test_a_beat_tick_runs_the_task_and_the_run_is_pollable(api, worker):
    created = _create(api, HOURLY)
    scheduler = DatabaseScheduler(app=_app(), lazy=True)
    entry = scheduler.schedule[f"schedule:{created['id']}"]

    scheduler.apply_entry(entry, producer=None)

    execution = wait_for(lambda: TaskExecution.objects.filter(schedule_id=created["id"]).first())
    assert execution.actor_type == "schedule"
    assert execution.scheduled_for is not None
    assert (execution.scheduled_for.minute, execution.scheduled_for.second) == (0, 0)
    assert poll_finished(api, str(execution.pk))["status"] == "succeeded"
    assert api.get(created["url"]).json()["last_execution"] == str(execution.pk)
    assert api.get(f"/api/v1/tasks/?schedule={created['id']}").json()["results"][0]["id"] == str(execution.pk)


@pytest.mark.worker
def test_two_beats_firing_the_same_tick_run_it_once(api, worker):
    created = _create(api, HOURLY)
    beats = [DatabaseScheduler(app=_app(), lazy=True) for _ in range(2)]

    for beat in beats:
        beat.apply_entry(beat.schedule[f"schedule:{created['id']}"], producer=None)

    execution = wait_for(lambda: TaskExecution.objects.filter(schedule_id=created["id"]).first())
    poll_finished(api, str(execution.pk))
    assert TaskExecution.objects.filter(schedule_id=created["id"]).count() == 1
    # And the dispatcher itself, called twice for one tick, creates nothing more.
    assert schedule_fire(schedule_id=created["id"], now=execution.scheduled_for) is None


@pytest.mark.django_db
def test_a_schedule_whose_input_went_invalid_records_a_failed_run(api):
    created = _create(api, HOURLY)
    Schedule.objects.filter(pk=created["id"]).update(target={"task": "signalbox.testing.count", "input": {}})

    execution = schedule_fire(schedule_id=created["id"])

    assert execution is not None
    assert execution.status == "failed"
    assert execution.error_code == "validation_error"
    assert "could not start" in execution.error_message


def _app():
    from workers.celery import app

    return app
