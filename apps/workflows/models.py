"""Workflow definitions (versioned), their instances, transition intents and the transition log.

A definition is never edited in place: each change is a new `WorkflowDefinition` row with the
next version, and an instance keeps the version it started on. An instance's `version` counts
applied transitions and is the optimistic lock: a transition is a compare-and-set on it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models

from apps.core.tenancy import TenantOwned
from apps.workflows.spec import WorkflowSpec


class WorkflowDefinition(TenantOwned):  # type: ignore[django-manager-missing]
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.SlugField(max_length=64)
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    spec = models.JSONField(help_text="The normalized definition document (see apps/workflows/spec.py).")
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("key", "-version")
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key", "version"], name="workflow_definition_unique_version"),
        ]

    def __str__(self) -> str:
        return f"{self.key} v{self.version}"

    @property
    def parsed(self) -> WorkflowSpec:
        cached = getattr(self, "_parsed", None)
        if cached is None:
            cached = WorkflowSpec.from_dict(self.spec)
            self._parsed = cached
        return cached


class WorkflowInstance(TenantOwned):  # type: ignore[django-manager-missing]
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    definition = models.ForeignKey(WorkflowDefinition, on_delete=models.PROTECT, related_name="instances")
    workflow_key = models.SlugField(max_length=64, help_text="The definition's key, for lookups by subject.")
    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=200)
    state = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1, help_text="Bumped by every transition (optimistic lock).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "workflow_key", "subject_type", "subject_id"], name="workflow_instance_unique_subject"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "workflow_key", "subject_id"], name="workflow_instance_subject")]

    def __str__(self) -> str:
        return f"{self.workflow_key}:{self.subject_type}/{self.subject_id} ({self.state})"

    @property
    def subject(self) -> dict[str, str]:
        return {"type": self.subject_type, "id": self.subject_id}


class IntentStatus(models.TextChoices):
    PENDING = "pending", "Waiting for a transitions worker"
    APPLIED = "applied", "Applied"
    REFUSED = "refused", "Refused (see error_code)"


class TransitionIntent(TenantOwned):
    """A request to apply a transition; applied by the `transitions` queue (or inline with ?wait=true)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    instance = models.ForeignKey(WorkflowInstance, on_delete=models.CASCADE, related_name="intents")
    transition = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, blank=True)
    expected_state = models.CharField(max_length=64, blank=True)
    observed_version = models.PositiveIntegerField(help_text="The instance version when the intent was recorded.")
    actor = models.JSONField(default=dict, help_text="Who asked: {type, id, name, scopes}.")
    status = models.CharField(max_length=16, choices=IntentStatus.choices, default=IntentStatus.PENDING)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    error_fields = models.JSONField(default=dict, blank=True)
    task_execution_id = models.CharField(
        max_length=64, blank=True, help_text="The apps.tasks TaskExecution clients poll at /api/v1/tasks/<id>/."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["status", "created_at"], name="transition_intent_pending"),
            models.Index(fields=["tenant", "created_at"], name="transition_intent_tenant_time"),
        ]

    def __str__(self) -> str:
        return f"{self.transition} on {self.instance_id} ({self.status})"

    @property
    def error(self) -> dict[str, Any] | None:
        if not self.error_code:
            return None
        return {"code": self.error_code, "message": self.error_message, "fields": self.error_fields}


class TransitionLog(TenantOwned):
    """One row per applied transition (and one for the instance's creation, with an empty transition)."""

    instance = models.ForeignKey(WorkflowInstance, on_delete=models.CASCADE, related_name="log")
    intent = models.OneToOneField(
        TransitionIntent, null=True, blank=True, on_delete=models.SET_NULL, related_name="log_entry"
    )
    # The intent's id, copied when the row is written: finished intents are purged (the link above
    # then goes null) but the history must still name the intent a transition came from.
    intent_ref = models.UUIDField(null=True, blank=True, editable=False)
    transition = models.CharField(max_length=64, blank=True)
    from_state = models.CharField(max_length=64, blank=True)
    to_state = models.CharField(max_length=64)
    actor = models.JSONField(default=dict)
    payload = models.JSONField(default=dict, blank=True)
    instance_version = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("instance", "instance_version")
        constraints = [
            # A second row for one version would mean two transitions won the same compare-and-set.
            models.UniqueConstraint(fields=["instance", "instance_version"], name="transition_log_unique_version"),
        ]

    def __str__(self) -> str:
        return f"{self.from_state or '∅'} -[{self.transition or 'created'}]-> {self.to_state}"
