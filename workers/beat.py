"""The beat schedule: every periodic job, registered idempotently in django-celery-beat.

`manage.py setup_schedules` (run by `make run` and at deploy) writes them as PeriodicTask rows,
so they show in Django admin, where operators can tune intervals; `manage.py migrate` does the
same after migrating (a `post_migrate` hook), so a fresh deploy has every job. Rerunning never
duplicates a job (rows are keyed by name) and never undoes an operator: a job that exists keeps
its interval (or crontab) and its enabled flag as set in admin; only what the code owns (the
task name, queue, description) follows the code. `setup_schedules --reset` puts the intervals
of the code back. Beat runs as a single replica (see docs/architecture.md); every job is also
harmless when a second beat runs it twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    task: str
    every_seconds: int
    queue: str = "maintenance"
    description: str = ""
    cron: str = ""  # five fields in UTC, instead of every_seconds


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob(
        name="notifications: dispatch due deliveries",
        task="signalbox.notifications.dispatch_due",
        every_seconds=5,
        description="Queues due retries, quiet-hour deferrals and scheduled notifications.",
    ),
    PeriodicJob(
        name="notifications: sweep stuck rows",
        task="signalbox.notifications.sweep",
        every_seconds=30,
        description="Republishes intents and chunks never run; requeues lost and dead-worker deliveries.",
    ),
    PeriodicJob(
        name="providers: purge applied status event ids",
        task="signalbox.providers.purge_events",
        every_seconds=3600,
        description="Deletes SendGrid event ids older than SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS (dedup log).",
    ),
    PeriodicJob(
        name="purge audit log",
        task="signalbox.maintenance.purge_audit",
        every_seconds=3600,
        description="Deletes audit entries past retention (tenant retention_days.audit, else AUDIT_RETENTION_DAYS).",
    ),
    PeriodicJob(
        name="tasks: sweep stale executions",
        task="signalbox.tasks.sweep_stale",
        every_seconds=60,
        description="Publishes tracked tasks that never reached the broker; requeues those whose worker died.",
    ),
    PeriodicJob(
        name="tasks: purge expired executions",
        task="signalbox.tasks.purge_expired",
        every_seconds=3600,
        description="Deletes finished task executions and their files past their delete_at.",
    ),
    PeriodicJob(
        name="webhooks: dispatch due messages",
        task="signalbox.webhooks.dispatch_due",
        every_seconds=5,
        queue="webhooks",
        description="Publishes webhook messages whose next_attempt_at has come; reclaims sends of dead workers.",
    ),
    PeriodicJob(
        name="events: sweep unprocessed events",
        task="signalbox.events.sweep",
        every_seconds=60,
        queue="events",
        description="Republishes events committed but never processed (a lost publish, a dead worker).",
    ),
    PeriodicJob(
        name="workflows: sweep pending transition intents",
        task="signalbox.workflows.sweep",
        every_seconds=60,
        queue="transitions",
        description="Republishes transition intents committed but never applied.",
    ),
    PeriodicJob(
        name="events: purge expired events",
        task="signalbox.maintenance.purge_events",
        every_seconds=3600,
        description=(
            "Deletes events, rule executions and webhook messages past retention (SIGNALBOX_EVENT_RETENTION_DAYS)."
        ),
    ),
    PeriodicJob(
        name="workflows: purge finished transition intents",
        task="signalbox.maintenance.purge_transition_intents",
        every_seconds=3600,
        description="Deletes finished transition intents past retention; the transition log is kept.",
    ),
    PeriodicJob(
        name="digests: flush due windows",
        task="signalbox.digests.flush_due",
        every_seconds=60,
        queue="digests",
        description="Hands digest windows whose time has come to flush tasks: one message per recipient and channel.",
    ),
    PeriodicJob(
        name="retention: purge notification data",
        task="signalbox.maintenance.purge",
        every_seconds=3600,
        description="Deletes deliveries, inbox items, notifications, digest windows, webhook messages and "
        "idempotency keys past retention (SIGNALBOX_RETENTION_DAYS, tenant retention_days), in batches.",
    ),
    PeriodicJob(
        name="flows: dispatch due runs",
        task="signalbox.flows.dispatch_due",
        every_seconds=5,
        description="Publishes the flow engine's advance task when flow runs are due (delays, waiting branches).",
    ),
    PeriodicJob(
        name="flows: sweep runs",
        task="signalbox.flows.sweep",
        every_seconds=30,
        description="Gives back flow runs whose worker died; ends runs of cancelled flows and finished instances.",
    ),
    PeriodicJob(
        # Beat itself writes this row at start (same name, same crontab); registering it here makes
        # it visible in admin from the first deploy. Routed to `maintenance` by workers/routing.py.
        name="celery.backend_cleanup",
        task="celery.backend_cleanup",
        every_seconds=0,
        cron="0 4 * * *",
        queue="",
        description="Deletes Celery results (django-celery-results) older than CELERY_RESULT_EXPIRES.",
    ),
)


def _schedule_for(job: PeriodicJob, using: str) -> dict[str, Any]:
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule

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
    import json

    from django.db import IntegrityError, transaction
    from django_celery_beat.models import PeriodicTask

    done = []
    for job in PERIODIC_JOBS:
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
    from django.db import connections
    from django_celery_beat.models import PeriodicTask

    if PeriodicTask._meta.db_table in connections[using].introspection.table_names():
        setup_schedules(using=using)
