"""Creating workflow instances: one per subject, starting in the initial state of the latest version."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from apps.core.actors import Actor
from apps.core.errors import Conflict, Unprocessable
from apps.workflows.models import TransitionLog, WorkflowInstance
from apps.workflows.selectors import definition_latest


def instance_create(
    *,
    tenant: Any,
    key: str,
    subject_id: str,
    subject_type: str = "",
    data: dict[str, Any] | None = None,
    actor: Actor,
) -> WorkflowInstance:
    definition = definition_latest(tenant=tenant, key=key)
    subject_type = subject_type or key
    if not subject_id or len(subject_id) > 200 or "/" in subject_id:
        raise Unprocessable(
            "subject_id is 1-200 characters, without '/'.", code="invalid_subject", fields={"subject_id": ["Invalid."]}
        )
    if data is not None and not isinstance(data, dict):
        raise Unprocessable("data is a JSON object.", code="invalid_data", fields={"data": ["An object."]})
    spec = definition.parsed
    try:
        with transaction.atomic():
            instance = WorkflowInstance.objects.create(
                tenant=tenant,
                definition=definition,
                workflow_key=key,
                subject_type=subject_type,
                subject_id=subject_id,
                state=spec.initial,
                data=data or {},
                version=1,
            )
            TransitionLog.objects.create(
                tenant=tenant,
                instance=instance,
                to_state=spec.initial,
                actor=actor.as_dict(scopes=True),
                instance_version=1,
            )
    except IntegrityError as exc:
        raise Conflict(
            f"{subject_type} {subject_id!r} already has a {key!r} workflow instance.", code="instance_exists"
        ) from exc
    return instance
