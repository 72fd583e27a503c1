"""Django admin for notifications: templates (validated, versioned, previewable, archived instead of
deleted), categories, recipients (validated like the API) with their devices and preferences,
tenant default preferences, topics with their members, read-only views of notifications and
deliveries, and what providers report back: the suppression list (add an address, or delete a row
to allow an address again) and the log of applied status events (read only)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.core.errors import ApplicationError
from apps.notifications import rendering, validators
from apps.notifications.models import (
    Category,
    Delivery,
    DeliveryAttempt,
    Device,
    DigestWindow,
    Notification,
    Preference,
    Recipient,
    Suppression,
    Template,
    TemplateVersion,
    Topic,
    TopicMembership,
)
from apps.notifications.services import templates as template_services
from apps.notifications.services.preferences import preference_layer_errors
from apps.notifications.services.sending import deliveries_replay
from apps.notifications.services.suppressions import normalize
from apps.providers.models import ProviderEvent
from apps.tenancy.actors import actor_from_request


def _flatten(errors: Any, prefix: str = "") -> Iterable[str]:
    """Nested field errors -> `fr.email.subject: Line 1: …` lines."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            label = prefix if key == "non_field_errors" else f"{prefix}.{key}" if prefix else str(key)
            yield from _flatten(value, label)
    elif isinstance(errors, list):
        for item in errors:
            yield from _flatten(item, prefix)
    else:
        yield f"{prefix}: {errors}" if prefix else str(errors)


class TemplateAdminForm(forms.ModelForm):  # type: ignore[type-arg]
    category_key = forms.SlugField(label="Category", initial=template_services.DEFAULT_CATEGORY)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    variables = forms.JSONField(
        required=False,
        initial=list,
        help_text='e.g. ["order_id", {"name": "carrier", "required": false, "example": "UPS"}]',
    )
    default_channels = forms.JSONField(required=False, initial=list, help_text='e.g. ["email", "in_app"]')
    content = forms.JSONField(
        initial=dict, help_text='{"default": {"email": {"subject": "…", "text": "…", "html": "…"}}, "fr": {…}}'
    )

    class Meta:
        model = Template
        fields = ["tenant", "key", "name"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        version = self.instance.current_version if self.instance.pk else None
        if version is not None:
            self.initial.update(
                category_key=version.category_key,
                description=version.description,
                variables=version.variables,
                default_channels=version.default_channels,
                content=version.content,
            )

    def definition(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data.get("name") or "",
            "description": data.get("description") or "",
            "category": data.get("category_key"),
            "variables": data.get("variables") if data.get("variables") is not None else [],
            "default_channels": data.get("default_channels") if data.get("default_channels") is not None else [],
            "content": data.get("content"),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk and self.instance.archived_at is not None:
            self.add_error(None, "This template is archived; restore it (list page action) before changing it.")
        _, errors = template_services.template_definition_errors(self.definition())
        targets = {"category": "category_key"}
        for name, problems in errors.items():
            field = targets.get(name, name)
            for line in _flatten(problems):
                self.add_error(field if field in self.fields else None, line)
        return cleaned


class TemplateVersionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = TemplateVersion
    fields = ("version", "category_key", "default_channels", "created_at", "created_by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-version",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin[Template]):
    form = TemplateAdminForm
    list_display = ("key", "name", "tenant", "category", "version", "archived_at", "updated_at")
    list_filter = ("tenant", "category__key", ("archived_at", admin.EmptyFieldListFilter))
    search_fields = ("key", "name")
    readonly_fields = ("version", "archived_at", "preview")
    inlines = [TemplateVersionInline]
    actions = ["archive", "restore"]

    def get_fieldsets(self, request: HttpRequest, obj: Template | None = None) -> Any:
        main: tuple[str, ...] = ("tenant", "key", "name", "category_key", "description")
        if obj is not None:
            main = (*main, "version", "archived_at")
        fieldsets: list[Any] = [
            (None, {"fields": main}),
            ("Definition (saving a change adds a version)", {"fields": ("variables", "default_channels", "content")}),
        ]
        if obj is not None:
            fieldsets.append(("Preview (each variable's example, a sample recipient)", {"fields": ("preview",)}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Template | None = None) -> Any:
        return (*self.readonly_fields, "tenant", "key") if obj is not None else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # archive instead: deliveries keep pointing at the versions they used

    @admin.display(description="Version")
    def version(self, obj: Template) -> int | None:
        return obj.current_version.version if obj.current_version else None

    @admin.display(description="Preview")
    def preview(self, obj: Template) -> SafeString:
        version = obj.current_version
        if version is None:
            return format_html("<em>No version yet.</em>")
        blocks = []
        for locale, channels in rendering.preview(version.content, version.variables).items():
            for channel, fields in channels.items():
                rows = format_html_join(
                    "",
                    "<tr><th style='width:8em'>{}</th><td>{}</td></tr>",
                    (
                        (
                            name,
                            format_html(
                                "<iframe sandbox style='width:100%;height:12em' srcdoc='{}'></iframe>",
                                value,
                            )
                            if name == "html"
                            else format_html(
                                "<pre style='white-space:pre-wrap;margin:0'>{}</pre>",
                                value if isinstance(value, str) else json.dumps(value, indent=2),
                            ),
                        )
                        for name, value in fields.items()
                    ),
                )
                blocks.append(
                    format_html("<h3>{} · {}</h3><table style='width:100%'>{}</table>", locale, channel, rows)
                )
        return format_html_join("", "{}", ((b,) for b in blocks))

    def save_model(self, request: HttpRequest, obj: Template, form: Any, change: bool) -> None:
        actor = actor_from_request(request)
        try:
            if change:
                _, added = template_services.template_update(template=obj, changes=form.definition(), actor=actor)
                if not added:
                    messages.info(request, "Nothing changed; no version was added.")
                return
            created = template_services.template_create(
                tenant=obj.tenant, key=obj.key, definition=form.definition(), actor=actor
            )
        except ApplicationError as exc:
            messages.error(request, f"{exc.message} {'; '.join(_flatten(exc.fields))}")
            raise
        obj.pk, obj.current_version, obj.category = created.pk, created.current_version, created.category
        obj._state.adding = False

    @admin.action(description="Archive selected templates")
    def archive(self, request: HttpRequest, queryset: QuerySet[Template]) -> None:
        for template in queryset:
            template_services.template_archive(template=template, actor=actor_from_request(request))
        messages.success(request, f"Archived {queryset.count()} template(s).")

    @admin.action(description="Restore selected templates")
    def restore(self, request: HttpRequest, queryset: QuerySet[Template]) -> None:
        for template in queryset:
            template_services.template_restore(template=template, actor=actor_from_request(request))
        messages.success(request, f"Restored {queryset.count()} template(s).")


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin[Category]):
    list_display = ("key", "name", "tenant", "critical", "updated_at")
    list_filter = ("tenant", "critical")
    search_fields = ("key", "name")


class DeviceInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Device
    fields = ("platform", "token", "active", "deactivated_reason", "created_at")
    readonly_fields = ("created_at",)
    extra = 0


class RecipientAdminForm(forms.ModelForm):  # type: ignore[type-arg]
    """The API's rules in admin too: E.164 phone numbers (normalised), IANA time zones, locales."""

    class Meta:
        model = Recipient
        fields = (
            "tenant",
            "external_id",
            "name",
            "email",
            "phone",
            "locale",
            "timezone",
            "chat_address",
            "webhook_url",
            "data",
            "unsubscribed_at",
        )

    def clean_external_id(self) -> str:
        return validators.validate_external_id(self.cleaned_data.get("external_id"))

    def clean_phone(self) -> str:
        return validators.validate_phone(self.cleaned_data.get("phone"))

    def clean_timezone(self) -> str:
        return validators.validate_timezone(self.cleaned_data.get("timezone"))

    def clean_locale(self) -> str:
        return validators.validate_locale(self.cleaned_data.get("locale"))

    def clean_chat_address(self) -> str:
        return validators.refuse_internal_chat_hook(self.cleaned_data.get("chat_address") or "")

    def clean_webhook_url(self) -> str:
        return validators.validate_outbound_url(self.cleaned_data.get("webhook_url"))


class PreferenceAdminForm(forms.ModelForm):  # type: ignore[type-arg]
    """Channels map a known channel to true/false, as through the API."""

    class Meta:
        model = Preference
        fields = ("tenant", "recipient", "category", "channels", "digest", "quiet_hours_start", "quiet_hours_end")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for field, problems in preference_layer_errors(cleaned).items():
            self.add_error(field, problems)
        recipient = cleaned.get("recipient") or (self.instance.recipient if self.instance.recipient_id else None)
        tenant = cleaned.get("tenant")
        tenant_id = tenant.pk if tenant is not None else (recipient.tenant_id if recipient else None)
        if recipient is not None and tenant is not None and recipient.tenant_id != tenant.pk:
            self.add_error("recipient", "This recipient belongs to another tenant.")
        category = cleaned.get("category")
        if category is not None and tenant_id is not None and category.tenant_id != tenant_id:
            self.add_error("category", "This category belongs to another tenant.")
        return cleaned


class PreferenceInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Preference
    form = PreferenceAdminForm
    fields = ("category", "channels", "digest", "quiet_hours_start", "quiet_hours_end")
    extra = 0


class TopicMembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    model = TopicMembership
    raw_id_fields = ("recipient",)
    readonly_fields = ("created_at",)
    extra = 0


@admin.register(Recipient)
class RecipientAdmin(admin.ModelAdmin[Recipient]):
    form = RecipientAdminForm
    list_display = ("external_id", "tenant", "email", "phone", "locale", "timezone", "unsubscribed_at")
    list_filter = ("tenant",)
    search_fields = ("external_id", "email", "phone")
    readonly_fields = ("created_at", "updated_at")
    inlines = [DeviceInline, PreferenceInline]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        for row in formset.save(commit=False):
            row.tenant_id = form.instance.tenant_id  # a recipient's devices and layers are in its tenant
            row.save()
        for row in formset.deleted_objects:
            row.delete()
        formset.save_m2m()


@admin.register(Preference)
class PreferenceAdmin(admin.ModelAdmin[Preference]):
    """Recipients' layers, and the tenant defaults (rows without a recipient)."""

    form = PreferenceAdminForm
    list_display = ("tenant", "recipient", "category", "channels", "digest", "quiet_hours_start", "quiet_hours_end")
    list_filter = ("tenant", ("recipient", admin.EmptyFieldListFilter), "digest")
    search_fields = ("recipient__external_id", "category__key")
    raw_id_fields = ("recipient",)


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin[Topic]):
    list_display = ("key", "name", "tenant", "created_at")
    list_filter = ("tenant",)
    search_fields = ("key", "name")
    inlines = [TopicMembershipInline]


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Pipeline rows change only through the services; admin shows them."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "template", "status", "priority", "recipient_count", "created_at", "completed_at")
    list_filter = ("status", "priority", "tenant")
    search_fields = ("id", "idempotency_key", "dedup_key")
    date_hierarchy = "created_at"


class DeliveryAttemptInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DeliveryAttempt
    fields = ("number", "provider", "outcome", "status_code", "error_code", "error", "latency_ms", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "notification",
        "recipient",
        "channel",
        "status",
        "suppression_reason",
        "attempts",
        "provider",
        "created_at",
    )
    list_filter = ("status", "channel", "suppression_reason", "error_code", "tenant")
    search_fields = ("id", "provider_message_id", "recipient__external_id")
    list_select_related = ("recipient",)
    inlines = [DeliveryAttemptInline]
    show_full_result_count = False
    # "Show counts" next to each filter: how many are dead (or failed, bounced…) under the other filters.
    show_facets = admin.ShowFacets.ALLOW
    actions = ["replay"]

    @admin.action(description="Replay selected failed or dead deliveries")
    def replay(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        by_tenant: dict[Any, list[Any]] = {}
        for pk, tenant_id in queryset.values_list("pk", "tenant_id"):
            by_tenant.setdefault(tenant_id, []).append(pk)
        actor = actor_from_request(request)
        replayed = sum(deliveries_replay(tenant_id=t, delivery_ids=ids, actor=actor) for t, ids in by_tenant.items())
        skipped = sum(len(ids) for ids in by_tenant.values()) - replayed
        messages.success(request, f"Replayed {replayed} deliveries; {skipped} were not failed or dead.")


@admin.register(DigestWindow)
class DigestWindowAdmin(ReadOnlyAdmin):
    """Digest windows (docs/scheduling.md): open ones collect items until `due_at`; closed ones
    link the digest notification that was sent."""

    list_display = ("id", "tenant", "recipient", "channel", "group_key", "status", "due_at", "item_count")
    list_filter = ("status", "channel", "frequency", "tenant")
    search_fields = ("id", "window_key", "recipient__external_id")
    list_select_related = ("recipient", "tenant")
    date_hierarchy = "due_at"


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin[Suppression]):
    list_display = ("address", "channel", "reason", "source", "tenant", "created_at")
    list_filter = ("channel", "reason", "tenant")
    search_fields = ("address", "source")
    readonly_fields = ("source", "delivery_id", "created_at")
    fields = ("tenant", "channel", "address", "reason", "detail", "source", "delivery_id", "created_at")
    show_full_result_count = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # delete the row instead, and add another if the reason changed

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        obj.address = normalize(obj.channel, obj.address)
        obj.source = obj.source or f"staff:{request.user.get_username()}"
        super().save_model(request, obj, form, change)


@admin.register(ProviderEvent)
class ProviderEventAdmin(admin.ModelAdmin[ProviderEvent]):
    list_display = ("event_id", "provider", "kind", "received_at")
    list_filter = ("provider", "kind")
    search_fields = ("event_id",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
