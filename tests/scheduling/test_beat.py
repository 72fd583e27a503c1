"""The beat schedule: every periodic job registered in django-celery-beat by `migrate` and by
`setup_schedules`, never twice, never undoing an operator's interval; every job's task exists on
the worker; the permanent names of this area's tasks."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.core.periodic import periodic_jobs, setup_schedules


@pytest.mark.django_db
def test_migrate_registered_every_periodic_job():
    # The test database was built by `migrate`: its post_migrate hook ran setup_schedules.
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {job.name for job in periodic_jobs()} <= names
    flush = PeriodicTask.objects.get(task="signalbox.digests.flush_due")
    assert (flush.queue, flush.interval.every, flush.interval.period) == ("digests", 60, "seconds")
    purge = PeriodicTask.objects.get(task="signalbox.maintenance.purge")
    assert (purge.queue, purge.interval.every) == ("maintenance", 3600)
    cleanup = PeriodicTask.objects.get(name="celery.backend_cleanup")
    assert (cleanup.crontab.minute, cleanup.crontab.hour, cleanup.interval) == ("0", "4", None)


@pytest.mark.django_db
def test_rerunning_setup_schedules_creates_nothing_twice_and_keeps_admin_edits():
    before = PeriodicTask.objects.count()
    dispatcher = PeriodicTask.objects.get(task="signalbox.notifications.dispatch_due")
    # An operator slows the dispatcher down and pauses the purge in admin
    slower, _ = IntervalSchedule.objects.get_or_create(every=20, period=IntervalSchedule.SECONDS)
    dispatcher.interval = slower
    dispatcher.save()
    PeriodicTask.objects.filter(task="signalbox.maintenance.purge").update(enabled=False, description="old text")

    out = StringIO()
    call_command("setup_schedules", stdout=out)
    call_command("setup_schedules", stdout=out)

    assert PeriodicTask.objects.count() == before
    assert PeriodicTask.objects.get(pk=dispatcher.pk).interval.every == 20
    purge = PeriodicTask.objects.get(task="signalbox.maintenance.purge")
    assert purge.enabled is False
    assert purge.description.startswith("Deletes deliveries")  # what the code owns follows the code
    assert "scheduled retention: purge notification data: updated" in out.getvalue()
    assert "scheduled digests: flush due windows: kept" in out.getvalue()

    # --reset puts the code's intervals back and enables every job
    call_command("setup_schedules", "--reset", stdout=StringIO())
    assert PeriodicTask.objects.get(pk=dispatcher.pk).interval.every == 5
    assert PeriodicTask.objects.get(task="signalbox.maintenance.purge").enabled is True


@pytest.mark.django_db
def test_a_deleted_job_comes_back():
    PeriodicTask.objects.filter(task="signalbox.digests.flush_due").delete()
    assert "digests: flush due windows: created" in setup_schedules()
    assert PeriodicTask.objects.filter(task="signalbox.digests.flush_due").count() == 1


def test_every_periodic_job_runs_a_registered_task_on_an_existing_queue():
    from workers.celery import app
    from workers.queues import QUEUE_NAMES
    from workers.routing import route_task

    app.loader.import_default_modules()
    for job in periodic_jobs():
        assert job.task in app.tasks, job.task
        queue = job.queue or route_task(job.task, (), {}, {})["queue"]
        assert queue in QUEUE_NAMES, job
    assert route_task("celery.backend_cleanup", (), {}, {}) == {"queue": "maintenance"}


def test_the_names_of_scheduling_tasks_are_permanent():
    from apps.core import retention_tasks
    from apps.notifications import tasks
    from apps.tasks.registry import get_task_type

    assert tasks.digests_flush_due.name == "signalbox.digests.flush_due"
    assert tasks.digests_flush_due.queue == "digests"  # type: ignore[attr-defined]
    assert tasks.digests_flush_windows.name == "signalbox.digests.flush_windows"
    assert tasks.digests_flush_windows.queue == "digests"  # type: ignore[attr-defined]
    assert retention_tasks.purge_expired_rows.name == "signalbox.maintenance.purge"
    assert retention_tasks.purge_expired_rows.queue == "maintenance"  # type: ignore[attr-defined]
    purge_type = get_task_type("signalbox.maintenance.retention_purge")
    assert purge_type is not None and purge_type.queue == "maintenance"
