"""Templates and categories. A template change never edits content in place: it adds a version.

Validation happens before anything is written: content that does not parse, or that uses a
variable not declared in `variables` (or `recipient`), is refused with per-field messages
(`validation_error`); validation never evaluates the template. Valid content is then rendered
once with each variable's example under the template budgets, and content that goes over one is
refused (`template_budget_exceeded`); previews are refused the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict
from apps.notifications import rendering
from apps.notifications.models import Category, Template, TemplateVersion
from apps.notifications.services.digest import digest_rule_errors
from apps.observability.audit import audit_record

DEFAULT_CATEGORY = "general"
VERSIONED_FIELDS = ("name", "description", "category", "variables", "default_channels", "content", "digest")


def category_get_or_create(*, tenant: Any, key: str) -> Category:
    """Categories named by a template come into being on first use (not critical until marked so)."""
    category = Category.objects.filter(tenant=tenant, key=key).first()
    if category is not None:
        return category
    try:
        with transaction.atomic():
            return Category.objects.create(tenant=tenant, key=key, name=key.replace("-", " ").replace("_", " "))
    except IntegrityError:
        return Category.objects.get(tenant=tenant, key=key)


def template_definition_errors(definition: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(normalized definition, field errors) for the versioned part of a template.

    Used by the service, the API and the admin form alike.
    """
    errors: dict[str, Any] = {}
    variables, variable_errors = rendering.variable_errors(definition.get("variables", []))
    if variable_errors:
        errors["variables"] = variable_errors
    content = definition.get("content")
    declared = {v["name"] for v in variables}
    content_errors = rendering.content_errors(content, declared)
    if content_errors:
        errors["content"] = content_errors
    default_channels = definition.get("default_channels", [])
    if not isinstance(default_channels, list) or any(c not in rendering.CHANNELS for c in default_channels):
        errors["default_channels"] = [f"A list of channels among {', '.join(rendering.CHANNELS)}."]
    elif not content_errors:
        missing = sorted(set(default_channels) - rendering.channels_with_default_content(content or {}))
        if missing:
            errors["default_channels"] = [f"No `default` content for: {', '.join(missing)}."]
    category = definition.get("category") or DEFAULT_CATEGORY
    if not isinstance(category, str) or not category.replace("-", "").replace("_", "").isalnum() or len(category) > 64:
        errors["category"] = ["A slug of at most 64 characters."]
    digest, digest_errors = digest_rule_errors(definition.get("digest"), declared)
    if digest_errors:
        errors["digest"] = digest_errors
    for text_field, limit in (("name", 200), ("description", 10000)):
        value = definition.get(text_field, "")
        if not isinstance(value, str) or len(value) > limit:
            errors[text_field] = [f"Text of at most {limit} characters."]
    normalized = {
        "name": definition.get("name", "") or "",
        "description": definition.get("description", "") or "",
        "category": category,
        "variables": variables,
        "default_channels": list(dict.fromkeys(default_channels)) if isinstance(default_channels, list) else [],
        "content": content,
        "digest": digest,
    }
    return normalized, errors


BUDGET_EXCEEDED = "template_budget_exceeded"


def _budget_refusal(errors: dict[str, Any]) -> ApplicationError:
    return ApplicationError(
        "The template goes over a rendering budget; see fields and docs/notifications.md (Template budgets).",
        code=BUDGET_EXCEEDED,
        fields={"content": errors},
    )


def _check(definition: Mapping[str, Any]) -> dict[str, Any]:
    normalized, errors = template_definition_errors(definition)
    if errors:
        raise ApplicationError("The template is invalid; see fields.", code="validation_error", fields=errors)
    return normalized


def _check_budgets(normalized: Mapping[str, Any]) -> None:
    over = rendering.budget_errors(normalized["content"], normalized["variables"])
    if over:
        raise _budget_refusal(over)


def _add_version(*, template: Template, definition: dict[str, Any], actor: Actor | None) -> TemplateVersion:
    number = (TemplateVersion.objects.filter(template=template).aggregate(n=Max("version"))["n"] or 0) + 1
    category = category_get_or_create(tenant=template.tenant_id, key=definition["category"])
    version = TemplateVersion.objects.create(
        template=template,
        version=number,
        name=definition["name"],
        description=definition["description"],
        category_key=category.key,
        variables=definition["variables"],
        default_channels=definition["default_channels"],
        content=definition["content"],
        digest=definition.get("digest"),
        created_by=actor.ref if actor else "",
    )
    Template.objects.filter(pk=template.pk).update(
        current_version=version, category=category, name=definition["name"], updated_at=timezone.now()
    )
    template.current_version, template.category, template.name = version, category, definition["name"]
    return version


@transaction.atomic
def template_create(*, tenant: Any, key: str, definition: Mapping[str, Any], actor: Actor | None = None) -> Template:
    normalized = _check(definition)
    if not isinstance(key, str) or not key or len(key) > 100 or not key.replace("-", "").replace("_", "").isalnum():
        raise ApplicationError(
            "Invalid key.", code="validation_error", fields={"key": ["A slug such as order_shipped."]}
        )
    _check_budgets(normalized)
    if Template.objects.filter(tenant=tenant, key=key).exists():
        raise Conflict("A template with this key exists.", code="template_exists", fields={"key": ["Already exists."]})
    category = category_get_or_create(tenant=tenant, key=normalized["category"])
    template = Template.objects.create(tenant=tenant, key=key, name=normalized["name"], category=category)
    _add_version(template=template, definition=normalized, actor=actor)
    audit_record(action="template.created", tenant=tenant, actor=actor or SYSTEM, target=template, data={"version": 1})
    return template


def _current_definition(template: Template) -> dict[str, Any]:
    version = template.current_version
    if version is None:
        return {"category": template.category.key}
    return {
        "name": version.name,
        "description": version.description,
        "category": version.category_key,
        "variables": version.variables,
        "default_channels": version.default_channels,
        "content": version.content,
        "digest": version.digest,
    }


@transaction.atomic
def template_update(
    *, template: Template, changes: Mapping[str, Any], actor: Actor | None = None
) -> tuple[Template, bool]:
    """Applies changes as a new version; returns (template, whether a version was added).

    Fields not in `changes` keep their current value. An identical definition adds nothing.
    """
    template = (
        Template.objects.select_for_update(of=("self",))
        .select_related("current_version", "category")
        .get(pk=template.pk)
    )
    if template.archived_at is not None:
        raise Conflict("The template is archived; restore it first.", code="template_archived")
    current = _current_definition(template)
    merged = {**current, **{k: v for k, v in changes.items() if k in VERSIONED_FIELDS}}
    normalized = _check(merged)
    # The current version is compared as normalized, not checked again: one saved before a budget
    # was tightened must stay fixable.
    if template.current_version is not None and normalized == template_definition_errors(current)[0]:
        return template, False
    _check_budgets(normalized)
    version = _add_version(template=template, definition=normalized, actor=actor)
    audit_record(
        action="template.updated",
        tenant=template.tenant,
        actor=actor or SYSTEM,
        target=template,
        data={"version": version.version},
    )
    return template, True


def template_archive(*, template: Template, actor: Actor = SYSTEM) -> Template:
    if template.archived_at is None:
        template.archived_at = timezone.now()
        Template.objects.filter(pk=template.pk).update(archived_at=template.archived_at)
        audit_record(action="template.archived", tenant=template.tenant, actor=actor, target=template)
    return template


def template_restore(*, template: Template, actor: Actor = SYSTEM) -> Template:
    if template.archived_at is not None:
        template.archived_at = None
        Template.objects.filter(pk=template.pk).update(archived_at=None, updated_at=timezone.now())
        audit_record(action="template.restored", tenant=template.tenant, actor=actor, target=template)
    return template


def template_preview(
    *, template: Template, data: Mapping[str, Any] | None = None, version: TemplateVersion | None = None
) -> dict[str, Any]:
    """Every locale and channel rendered with sample data (see `rendering.preview`); refused with
    `template_budget_exceeded` when any goes over a template budget."""
    version = version or template.current_version
    if version is None:
        return {}
    rendered, over = rendering.preview_with_budgets(version.content, version.variables, data)
    if over:
        raise _budget_refusal(over)
    return rendered


def category_delete(*, category: Category) -> None:
    if Template.objects.filter(category=category).exists():
        raise Conflict("Templates use this category; move them first.", code="category_in_use")
    category.delete()
