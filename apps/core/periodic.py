"""The beat schedule: the periodic jobs each app declares, written idempotently to django-celery-beat.

Each app declares its own jobs (`PeriodicJob`) and registers them from its `AppConfig.ready()` with
`register_periodic_jobs`, so core knows no job of any domain. `manage.py setup_schedules` (run by
`make run` and at deploy) writes them as PeriodicTask rows, so they show in Django admin, where
operators can tune intervals; `manage.py migrate` does the same after migrating (a `post_migrate`
hook connected in apps/core/apps.py), so a fresh deploy has every job. Rerunning never duplicates a
job (rows are keyed by name) and never undoes an operator: a job that exists keeps its interval (or
crontab) and its enabled flag as set in admin; only what the code owns (the task name, queue,
description) follows the code. `setup_schedules --reset` puts the intervals of the code back. Beat
runs as a single replica (see docs/architecture.md); every job is also harmless when a second beat
runs it twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connections, transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    task: str
    every_seconds: int
    queue: str = "maintenance"
    description: str = ""
    cron: str = ""  # five fields in UTC, instead of every_seconds


_JOBS: dict[str, PeriodicJob] = {}


def register_periodic_jobs(jobs: Iterable[PeriodicJob]) -> None:
    """Called from an app's `ready()`; a job registered again under its name replaces the first."""
    for job in jobs:
        _JOBS[job.name] = job


def periodic_jobs() -> tuple[PeriodicJob, ...]:
    """Every registered job, in the order the apps registered them."""
    return tuple(_JOBS.values())


# Beat itself writes this row at start (same name, same crontab); registering it here makes it visible
# in admin from the first deploy. Routed to `maintenance` by workers/routing.py.
CELERY_BACKEND_CLEANUP = PeriodicJob(
    name="celery.backend_cleanup",
    task="celery.backend_cleanup",
    every_seconds=0,
    cron="0 4 * * *",
    queue="",
    description="Deletes Celery results (django-celery-results) older than CELERY_RESULT_EXPIRES.",
)


def _schedule_for(job: PeriodicJob, using: str) -> dict[str, Any]:
    if job.cron:
        minute, hour, day_of_month, month_of_year, day_of_week = job.cron.split()
        fields = {
            "minute": minute,
            "hour": hour,
            "day_of_month": day_of_month,
            "month_of_year": month_of_year,
            "day_of_week": day_of_week,
            "timezone": "UTC",
        }
        crontabs = CrontabSchedule.objects.using(using)
        return {"crontab": crontabs.filter(**fields).first() or crontabs.create(**fields), "interval": None}
    every = {"every": job.every_seconds, "period": IntervalSchedule.SECONDS}
    intervals = IntervalSchedule.objects.using(using)
    return {"interval": intervals.filter(**every).first() or intervals.create(**every), "crontab": None}


def setup_schedules(*, reset: bool = False, using: str = "default") -> list[str]:
    """Creates each job's PeriodicTask if missing; returns what it did per job (`name: created|updated|kept`).

    An existing row keeps its schedule and enabled flag (admin edits win) unless `reset`; its
    task, queue and description follow the code. A row left unchanged is not saved, so a rerun
    does not make beat reload its schedule.
    """
    done = []
    for job in periodic_jobs():
        owned = {"task": job.task, "queue": job.queue or None, "description": job.description}
        with transaction.atomic(using=using):
            periodic = PeriodicTask.objects.using(using).select_for_update().filter(name=job.name).first()
            if periodic is None:
                try:
                    with transaction.atomic(using=using):
                        PeriodicTask.objects.using(using).create(
                            name=job.name, kwargs=json.dumps({}), **owned, **_schedule_for(job, using)
                        )
                    done.append(f"{job.name}: created")
                except IntegrityError:  # a concurrent setup_schedules created it first
                    done.append(f"{job.name}: kept")
                continue
            changes: dict[str, Any] = {k: v for k, v in owned.items() if getattr(periodic, k) != v}
            if reset:
                schedule = _schedule_for(job, using)
                changes.update(
                    {k: v for k, v in schedule.items() if getattr(periodic, f"{k}_id") != (v.pk if v else None)}
                )
                if not periodic.enabled:
                    changes["enabled"] = True
            for name, value in changes.items():
                setattr(periodic, name, value)
            if changes:
                periodic.save()
            done.append(f"{job.name}: {'updated' if changes else 'kept'}")
    return done


def setup_schedules_after_migrate(sender: Any, using: str = "default", **kwargs: Any) -> None:
    """`post_migrate` hook (apps/core/apps.py): registers the jobs once beat's tables exist."""
    if PeriodicTask._meta.db_table in connections[using].introspection.table_names():
        setup_schedules(using=using)
