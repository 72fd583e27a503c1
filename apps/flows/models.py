"""Flow tables: definitions and their immutable versions, one instance per notification run
through a flow, and one run per recipient of it.

A run is the recipient's progress: its current step, whether it is entering that step or waiting
in it (`phase`), when it is due next (`due_at`) and what happened so far (`history`). Timers are
these rows: the dispatcher takes due runs in chunks, so a million recipients waiting at a delay
are a million rows and no broker messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Q

from apps.core.tenancy import TenantOwned

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager


class Flow(TenantOwned):
    """A named flow (`order_reminder`). Its steps live in immutable `FlowVersion` rows;
    `current_version` is the one new notifications use. Deleting archives it."""

    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200, blank=True)
    current_version = models.ForeignKey(
        "FlowVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("key",)
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="flow_unique_key")]

    def __str__(self) -> str:
        return self.key


class FlowVersion(models.Model):
    """One immutable revision of a flow: the document as given and its expanded steps
    (`fallback` turned into send/branch steps, every `next` filled in)."""

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    document = models.JSONField(help_text="The definition as saved.")
    steps = models.JSONField(help_text="The expanded steps the engine runs.")
    template_key = models.SlugField(max_length=100, blank=True, help_text="The template it sends by default.")
    cancel_on = models.JSONField(null=True, blank=True, help_text='{"event_type", "key"}: ends the flow.')
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-version",)
        constraints = [models.UniqueConstraint(fields=["flow", "version"], name="flow_version_unique")]

    def __str__(self) -> str:
        return f"{self.flow_id} v{self.version}"


class FlowInstance(TenantOwned):
    """A notification run through a flow version: its audience's runs, and how it may be cancelled."""

    class Status(models.TextChoices):
        PENDING = "pending"  # attached; starts when the notification is fanned out
        ACTIVE = "active"  # runs are under way
        FINISHED = "finished"  # every run has ended
        CANCELLED = "cancelled"  # the notification was cancelled, or a cancel event arrived

    notification = models.OneToOneField(
        "notifications.Notification", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    flow_version = models.ForeignKey(FlowVersion, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    cancel_event_type = models.CharField(max_length=200, blank=True)
    cancel_key = models.CharField(max_length=200, blank=True)
    cancel_value = models.CharField(max_length=500, blank=True)
    # Declared for the type checker: django-stubs' plugin resolves this reverse manager only when it
    # happens to check FlowRun first.
    runs: RelatedManager[FlowRun]
    cancel_reason = models.CharField(max_length=500, blank=True)
    recipient_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(
                fields=["tenant", "cancel_event_type", "cancel_value"],
                name="flow_instance_cancel",
                condition=Q(status__in=["pending", "active"]) & ~Q(cancel_event_type=""),
            ),
            models.Index(fields=["status"], name="flow_instance_open", condition=Q(status__in=["pending", "active"])),
        ]

    def __str__(self) -> str:
        return str(self.notification_id)


class FlowRun(TenantOwned):
    """One recipient's progress through a flow instance."""

    class Status(models.TextChoices):
        WAITING = "waiting"  # due at due_at (now: to be run as soon as a worker takes it)
        RUNNING = "running"  # claimed by a worker until lease_expires_at
        DONE = "done"  # reached an exit (or the end of the steps)
        CANCELLED = "cancelled"  # the notification was cancelled or a cancel event arrived
        FAILED = "failed"  # a step could not run (its reason in history)

    class Phase(models.TextChoices):
        ENTER = "enter"  # the step has not run yet
        WAIT = "wait"  # the step runs and waits (a delay, a branch waiting for its condition)

    ACTIVE = ("waiting", "running")

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(FlowInstance, on_delete=models.CASCADE, related_name="runs", db_index=False)
    notification_id = models.UUIDField()
    recipient = models.ForeignKey("notifications.Recipient", on_delete=models.CASCADE, related_name="+", db_index=False)
    step = models.CharField(max_length=100)
    phase = models.CharField(max_length=8, choices=Phase.choices, default=Phase.ENTER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.WAITING)
    due_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True, help_text="A waiting branch gives up then.")
    watching = models.BooleanField(default=False, help_text="Woken early by its deliveries' outcomes and reads.")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    attempts = models.PositiveIntegerField(default=0)
    history = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=["notification_id", "recipient"], name="flow_run_unique_recipient")
        ]
        indexes = [
            models.Index(fields=["due_at"], name="flow_run_due", condition=Q(status="waiting")),
            models.Index(fields=["lease_expires_at"], name="flow_run_leased", condition=Q(status="running")),
            models.Index(fields=["instance", "step", "status"], name="flow_run_counts"),
            models.Index(fields=["tenant", "-id"], name="flow_run_list"),
            # a recipient's deletion cascades to its runs: without it, each delete scans them all
            models.Index(fields=["recipient"], name="flow_run_recipient"),
        ]

    def __str__(self) -> str:
        return f"{self.notification_id}:{self.recipient_id}@{self.step}"
