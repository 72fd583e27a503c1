"""Reads for workflows: definitions by key and version, instances by subject, available transitions."""

from __future__ import annotations

from typing import Any

from django.db.models import Max, OuterRef, QuerySet, Subquery

from apps.core.actors import Actor
from apps.core.errors import ApplicationError, Conflict, NotFound
from apps.workflows import guards
from apps.workflows.models import TransitionLog, WorkflowDefinition, WorkflowInstance


def definitions_latest(*, tenant: Any) -> QuerySet[WorkflowDefinition]:
    """The latest version of each of the tenant's workflows."""
    newest = (
        WorkflowDefinition.objects.filter(tenant=tenant, key=OuterRef("key"))
        .values("key")
        .annotate(v=Max("version"))
        .values("v")
    )
    return WorkflowDefinition.objects.filter(tenant=tenant, version=Subquery(newest)).order_by("key")


def definition_latest(*, tenant: Any, key: str) -> WorkflowDefinition:
    definition = WorkflowDefinition.objects.filter(tenant=tenant, key=key).order_by("-version").first()
    if definition is None:
        raise NotFound(f"No workflow {key!r}.", code="workflow_not_found")
    return definition


def definition_version(*, tenant: Any, key: str, version: int | None) -> WorkflowDefinition:
    if version is None:
        return definition_latest(tenant=tenant, key=key)
    definition = WorkflowDefinition.objects.filter(tenant=tenant, key=key, version=version).first()
    if definition is None:
        raise NotFound(f"No version {version} of workflow {key!r}.", code="workflow_not_found")
    return definition


def instance_get(*, tenant: Any, key: str, subject_id: str, subject_type: str = "") -> WorkflowInstance:
    """The instance of `key` for a subject; `subject_type` disambiguates when ids collide across types."""
    found = WorkflowInstance.objects.filter(tenant=tenant, workflow_key=key, subject_id=subject_id)
    if subject_type:
        found = found.filter(subject_type=subject_type)
    matches = list(found.select_related("definition")[:2])
    if not matches:
        raise NotFound(f"No {key!r} instance for subject {subject_id!r}.", code="instance_not_found")
    if len(matches) > 1:
        raise Conflict(
            f"Several subject types have the id {subject_id!r}; pass ?subject_type=.", code="ambiguous_subject"
        )
    return matches[0]


def instance_history(*, instance: WorkflowInstance) -> QuerySet[TransitionLog]:
    return TransitionLog.objects.filter(instance=instance).order_by("instance_version")


def transitions_for(*, instance: WorkflowInstance, actor: Actor) -> list[dict[str, Any]]:
    """Every transition leaving the current state, with whether this actor can take it now.

    Scopes and conditions are evaluated without a payload; a condition that reads `payload` and
    is not already true without one is listed under `checked_on_apply`.
    """
    spec = instance.definition.parsed
    variables = guards.guard_variables(
        state=instance.state, data=instance.data, payload={}, subject=instance.subject, actor=actor.as_dict(scopes=True)
    )
    listed = []
    for transition in spec.transitions_from(instance.state):
        entry: dict[str, Any] = {
            "name": transition.name,
            "to": transition.target,
            "description": transition.description,
            "payload_schema": transition.payload_schema,
            "available": True,
            "reason": None,
            "checked_on_apply": [],
        }
        try:
            guards.check_scopes(transition, actor.as_dict(scopes=True))
            entry["checked_on_apply"] = guards.check_conditions(transition, variables, defer_payload=True)
        except ApplicationError as exc:
            entry["available"] = False
            entry["reason"] = {"code": exc.code, "message": exc.message}
        listed.append(entry)
    return listed
