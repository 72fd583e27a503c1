"""Saving workflow definitions: every change is a new version; an unchanged document is not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from django.db import IntegrityError, transaction

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import Conflict, Unprocessable
from apps.observability.audit import audit_record
from apps.workflows.models import WorkflowDefinition
from apps.workflows.spec import parse_spec


def definition_save(*, tenant: Any, document: Any, actor: Actor = SYSTEM) -> tuple[WorkflowDefinition, bool]:
    """Validates the document and stores it as the key's next version.

    Returns (definition, created); when the document equals the latest version, that version is
    returned with created=False, so reloading the same file is harmless.
    """
    spec = parse_spec(document)
    stored = spec.to_dict()
    try:
        with transaction.atomic():
            latest = (
                WorkflowDefinition.objects.select_for_update()
                .filter(tenant=tenant, key=spec.key)
                .order_by("-version")
                .first()
            )
            if latest is not None and latest.spec == stored:
                return latest, False
            definition = WorkflowDefinition.objects.create(
                tenant=tenant,
                key=spec.key,
                version=(latest.version + 1) if latest else 1,
                name=spec.name,
                description=spec.description,
                spec=stored,
                created_by=actor.ref,
            )
            audit_record(
                action="workflow.version_created",
                tenant=tenant,
                actor=actor,
                target=definition,
                data={"key": definition.key, "version": definition.version},
            )
    except IntegrityError as exc:  # two first versions of one key at once
        raise Conflict("Another version of this workflow was saved at the same time; retry.") from exc
    return definition, True


def document_parse(text: str, *, name: str = "") -> Any:
    """A YAML or JSON document (JSON is YAML, but its errors read better from the JSON parser)."""
    try:
        if name.endswith(".json") or text.lstrip().startswith("{"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise Unprocessable(f"Not valid YAML or JSON: {exc}", code="invalid_document") from exc


def definition_load_file(*, tenant: Any, path: Path) -> tuple[WorkflowDefinition, bool]:
    document = document_parse(path.read_text(encoding="utf-8"), name=path.name)
    return definition_save(tenant=tenant, document=document, actor=Actor(kind="system", id=f"loadworkflow:{path.name}"))
