"""Saving flows: a document is validated whole (field errors, nothing written) and saved as a
new immutable version of its key; an unchanged document saves nothing."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.errors import ApplicationError, NotFound
from apps.flows import spec
from apps.flows.models import Flow, FlowVersion
from apps.flows.services.engine import flows_supported
from apps.notifications.models import Template


def flow_check(*, tenant: Any, document: Any) -> spec.Parsed:
    """The parsed document, or ApplicationError `validation_error` with the problems in `fields`: 400
    when the document breaks its schema, 422 when it is well formed and refused by a rule the schema
    cannot express (an id naming no step, a loop, the template: one of the tenant's, with content for
    each channel the flow sends)."""
    parsed, refused = spec.parse(document)
    if refused is not None:
        raise ApplicationError(
            "The flow is invalid; nothing was saved. See fields.",
            code="validation_error",
            status_code=refused.status,
            fields=refused.fields,
        )
    assert parsed is not None  # parse answers one or the other
    errors: dict[str, list[str]] = {}
    if parsed.template:
        template = (
            Template.objects.filter(tenant=tenant, key=parsed.template, archived_at__isnull=True)
            .select_related("current_version")
            .first()
        )
        if template is None or template.current_version is None:
            errors["template"] = [f"No template {parsed.template!r}."]
        else:
            available = set(template.current_version.content.get("default", {}))
            missing = [c for c in parsed.channels if c not in available]
            if missing:
                errors["template"] = [f"The template has no content for channel(s): {', '.join(missing)}."]
    if errors:
        raise ApplicationError(
            "The flow is invalid; nothing was saved. See fields.",
            code="validation_error",
            status_code=422,
            fields=errors,
        )
    return parsed


def flow_save(*, tenant: Any, document: Any) -> tuple[FlowVersion, bool]:
    """Saves the document as the next version of its key; (version, created). The same document as
    the current version is not saved again."""
    flows_supported()
    parsed = flow_check(tenant=tenant, document=document)
    with transaction.atomic():
        flow = Flow.objects.select_for_update().filter(tenant=tenant, key=parsed.key).first()
        if flow is None:
            try:
                with transaction.atomic():
                    flow = Flow.objects.create(tenant=tenant, key=parsed.key, name=parsed.name)
            except IntegrityError:  # a concurrent save created it: wait for its lock
                flow = Flow.objects.select_for_update().get(tenant=tenant, key=parsed.key)
        current = flow.current_version
        if current is not None and current.document == document and flow.archived_at is None:
            return current, False
        number = (flow.versions.order_by("-version").values_list("version", flat=True).first() or 0) + 1
        version = FlowVersion.objects.create(
            flow=flow,
            version=number,
            document=document,
            steps=parsed.steps,
            template_key=parsed.template,
            cancel_on=parsed.cancel_on,
        )
        flow.current_version = version
        flow.name = parsed.name
        flow.archived_at = None
        flow.save(update_fields=["current_version", "name", "archived_at", "updated_at"])
    return version, True


def flow_archive(*, flow: Flow) -> Flow:
    """Archives a flow: new notifications can no longer use it; running ones go on."""
    Flow.objects.filter(pk=flow.pk).update(archived_at=timezone.now())
    flow.refresh_from_db()
    return flow


def flow_get(*, tenant: Any, key: str) -> Flow:
    flow = Flow.objects.filter(tenant=tenant, key=key).select_related("current_version").first()
    if flow is None:
        raise NotFound(f"No flow {key!r}.")
    return flow
