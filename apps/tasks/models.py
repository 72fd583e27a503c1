"""TaskExecution: the one record clients poll for any background work; Schedule: cron/interval runs of it.

A `TaskExecution` is written before anything is queued and is the only source of truth for
clients; Celery's own result rows (django-celery-results) are not written for tracked tasks
(see docs/architecture.md, "Tracked tasks"). Every state change is a conditional UPDATE that
also bumps `version`, which is the polling endpoint's ETag.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.core.tenancy import TenantOwned


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Waiting to retry"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    DEAD = "dead", "Dead (retries exhausted)"


WAITING = (Status.QUEUED, Status.RETRYING)
ACTIVE = (Status.QUEUED, Status.RUNNING, Status.RETRYING)
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.DEAD)


class Kind(models.TextChoices):
    TASK = "task", "Tracked task (@tracked_task)"
    DJANGO = "django", "Django Tasks (@task) through the Signalbox backend"
    INTENT = "intent", "Another app's intent, run by that app's worker"


# Kinds whose Celery messages this app publishes (and so the sweeper may publish again).
DISPATCHED_KINDS = (Kind.TASK, Kind.DJANGO)


# Schedule has a `timezone` field, which shadows the module inside its class body.
_now = timezone.now


class ScheduleKind(models.TextChoices):
    # Other kinds register themselves in apps/tasks/schedule_kinds.py (the notifications app's seam).
    TASK = "task", "Run a registered task"


class Schedule(TenantOwned):  # type: ignore[django-manager-missing]  # django-stubs misses `executions`
    """A tenant's recurring run, backed 1:1 by a django-celery-beat PeriodicTask.

    The PeriodicTask calls `signalbox.tasks.run_schedule(schedule_id)`, which creates one
    TaskExecution per tick; the unique (schedule, scheduled_for) rule makes a second beat harmless.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=32, default=ScheduleKind.TASK)
    target = models.JSONField(help_text='For kind "task": {"task": "<name>", "input": {...}}.')
    cron = models.CharField(max_length=100, blank=True, help_text="Five fields: minute hour day month weekday.")
    interval_seconds = models.PositiveIntegerField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=_now)
    updated_at = models.DateTimeField(default=_now)
    actor_type = models.CharField(max_length=20, default="system")
    actor_id = models.CharField(max_length=200, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_execution_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="schedule_unique_name"),
            models.CheckConstraint(
                condition=(Q(interval_seconds__isnull=True) & ~Q(cron=""))
                | (Q(interval_seconds__isnull=False) & Q(cron="")),
                name="schedule_cron_xor_interval",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron or f'every {self.interval_seconds}s'})"

    @property
    def periodic_task_name(self) -> str:
        return f"schedule:{self.id}"

    def describe(self) -> dict[str, Any]:
        return {"cron": self.cron, "interval_seconds": self.interval_seconds, "timezone": self.timezone}


class TaskExecution(TenantOwned):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null only for Django Tasks enqueued outside any tenant's request (a shell, a platform job).
    tenant = models.ForeignKey(  # type: ignore[assignment]
        "tenancy.Tenant", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TASK)
    name = models.CharField(max_length=200, help_text="Permanent dotted task name, or the intent's name.")
    input = models.JSONField(default=dict, blank=True, help_text="The validated input, as JSON.")
    queue = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    version = models.PositiveIntegerField(default=1, help_text="Bumped on every change; the ETag.")

    progress_current = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True)

    result = models.JSONField(null=True, blank=True)
    result_file = models.CharField(max_length=500, blank=True, help_text="Path in default_storage.")
    result_filename = models.CharField(max_length=200, blank=True)
    result_content_type = models.CharField(max_length=100, blank=True)
    result_size = models.BigIntegerField(null=True, blank=True)

    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    # For staff only (admin, platform keys): never shown to tenant keys.
    error_exception = models.CharField(max_length=300, blank=True)
    error_traceback = models.TextField(blank=True)

    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    scheduled_at = models.DateTimeField(null=True, blank=True, help_text="Not before, as the client asked.")
    run_after = models.DateTimeField(default=timezone.now, help_text="When the next attempt is due.")
    started_at = models.DateTimeField(null=True, blank=True)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    delete_at = models.DateTimeField(null=True, blank=True, help_text="The record and its file expire then.")

    # Publication: each publish carries a fresh `dispatch` token and only the message holding the
    # current token may claim the row, so a duplicate or superseded message is dropped.
    dispatch = models.UUIDField(default=uuid.uuid4)
    published_at = models.DateTimeField(null=True, blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    worker = models.CharField(max_length=255, blank=True)

    actor_type = models.CharField(max_length=20, default="system", help_text="api_key, staff, schedule, system")
    actor_id = models.CharField(max_length=200, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)

    schedule = models.ForeignKey(Schedule, null=True, blank=True, on_delete=models.SET_NULL, related_name="executions")
    scheduled_for = models.DateTimeField(null=True, blank=True, help_text="The schedule tick this run is for.")
    retry_of = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retried_as")

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="taskexec_tenant_time"),
            models.Index(fields=["tenant", "status", "-created_at"], name="taskexec_tenant_status"),
            models.Index(fields=["tenant", "name", "-created_at"], name="taskexec_tenant_name"),
            models.Index(fields=["run_after"], name="taskexec_waiting", condition=Q(status__in=["queued", "retrying"])),
            models.Index(fields=["lease_expires_at"], name="taskexec_running", condition=Q(status="running")),
            models.Index(fields=["delete_at"], name="taskexec_delete_at"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                name="taskexec_unique_idempotency_key",
                condition=Q(idempotency_key__isnull=False),
            ),
            # Two beat processes firing the same tick create one run: the second insert fails.
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"],
                name="taskexec_unique_schedule_tick",
                condition=Q(schedule__isnull=False, scheduled_for__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.status}] {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def percent(self) -> float | None:
        if not self.progress_total:
            return None
        return round(min(100.0, 100.0 * self.progress_current / self.progress_total), 1)

    @property
    def etag(self) -> str:
        return f'"{self.id.hex}.{self.version}"'
