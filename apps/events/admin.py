"""Django admin for events, rules and webhooks. Writes go through the services (validation, audit)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.errors import ApplicationError
from apps.events.models import Event, Rule, RuleExecution, Watcher, WebhookAttempt, WebhookEndpoint, WebhookMessage
from apps.events.services import events, rules, webhooks
from apps.tenancy.actors import actor_from_request


def _form_errors(exc: ApplicationError) -> forms.ValidationError:
    problems = [f"{where}: {m}" for where, found in exc.fields.items() for m in found]
    return forms.ValidationError(problems or [exc.message])


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RuleExecutionInline(admin.TabularInline[RuleExecution, Any]):
    model = RuleExecution
    extra = 0
    can_delete = False
    fields = ("rule", "event", "outcome", "actions", "error", "duration_ms", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ("type", "subject_type", "subject_id", "source", "status", "attempts", "tenant", "created_at")
    list_filter = ("status", "source", "tenant")
    search_fields = ("type", "subject_id")
    inlines = [RuleExecutionInline]
    actions = ["replay"]

    @admin.action(description="Replay (process the dead events again)")
    def replay(self, request: HttpRequest, queryset: QuerySet[Event]) -> None:
        done = 0
        for event in queryset.select_related("tenant"):
            try:
                events.event_replay(event=event, actor=actor_from_request(request))
                done += 1
            except ApplicationError as exc:
                messages.error(request, f"{event.pk}: {exc.message}")
        messages.success(request, f"{done} event(s) queued again.")


class RuleForm(forms.ModelForm[Rule]):
    class Meta:
        model = Rule
        fields = ["tenant", "name", "description", "event_type", "condition", "actions", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        tenant = data.get("tenant") or getattr(self.instance, "tenant", None)
        if tenant is not None and "event_type" in data and "actions" in data:
            try:
                data.update(
                    rules.rule_check(
                        tenant=tenant,
                        event_type=data["event_type"],
                        condition=data.get("condition", ""),
                        actions=data["actions"],
                    )
                )
            except ApplicationError as exc:
                raise _form_errors(exc) from exc
        return data


@admin.register(Rule)
class RuleAdmin(admin.ModelAdmin[Rule]):
    form = RuleForm
    list_display = ("name", "event_type", "enabled", "tenant", "updated_at")
    list_filter = ("enabled", "tenant")
    search_fields = ("name", "event_type")

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        fields = {
            k: form.cleaned_data[k] for k in ("name", "description", "event_type", "condition", "actions", "enabled")
        }
        if change:
            rules.rule_update(rule=Rule.objects.get(pk=obj.pk), actor=actor_from_request(request), **fields)
            return
        created = rules.rule_create(tenant=form.cleaned_data["tenant"], actor=actor_from_request(request), **fields)
        obj.pk = created.pk
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: Rule) -> None:
        rules.rule_delete(rule=obj, actor=actor_from_request(request))

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        # One by one through the service: the bulk delete would leave no audit entries.
        for rule in queryset.select_related("tenant"):
            rules.rule_delete(rule=rule, actor=actor_from_request(request))


class WebhookEndpointForm(forms.ModelForm[WebhookEndpoint]):
    url = forms.CharField(max_length=2000, help_text="http(s) URL; private addresses are refused.")

    class Meta:
        model = WebhookEndpoint
        fields = ["tenant", "url", "description", "event_types", "enabled"]

    def clean_url(self) -> str:
        try:
            return webhooks.check_url(self.cleaned_data["url"])
        except ApplicationError as exc:
            raise forms.ValidationError(exc.message) from exc

    def clean_event_types(self) -> list[str]:
        try:
            return webhooks.check_event_types(self.cleaned_data["event_types"] or [])
        except ApplicationError as exc:
            raise _form_errors(exc) from exc


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin[WebhookEndpoint]):
    form = WebhookEndpointForm
    list_display = ("url", "tenant", "enabled", "disabled_reason", "failing_since", "created_at")
    list_filter = ("enabled", "tenant")
    search_fields = ("url", "description")
    readonly_fields = ("disabled_reason", "disabled_at", "failing_since", "previous_secret_expires_at")
    actions = ["rotate_secret"]

    def save_model(self, request: HttpRequest, obj: WebhookEndpoint, form: Any, change: bool) -> None:
        fields = {k: form.cleaned_data[k] for k in ("url", "description", "event_types", "enabled")}
        if change:
            webhooks.endpoint_update(
                endpoint=WebhookEndpoint.objects.get(pk=obj.pk), actor=actor_from_request(request), **fields
            )
            return
        endpoint, secret = webhooks.endpoint_create(
            tenant=form.cleaned_data["tenant"], actor=actor_from_request(request), **fields
        )
        obj.pk = endpoint.pk
        obj._state.adding = False
        messages.warning(request, f"The signing secret is {secret} - copy it now, it will not be shown again.")

    def delete_model(self, request: HttpRequest, obj: WebhookEndpoint) -> None:
        webhooks.endpoint_delete(endpoint=obj, actor=actor_from_request(request))

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        # One by one through the service: the bulk delete would leave no audit entries.
        for endpoint in queryset.select_related("tenant"):
            webhooks.endpoint_delete(endpoint=endpoint, actor=actor_from_request(request))

    @admin.action(description="Rotate the signing secret (24 h overlap)")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        for endpoint in queryset:
            _, secret = webhooks.endpoint_rotate_secret(endpoint=endpoint, actor=actor_from_request(request))
            messages.warning(request, f"{endpoint.url}: the new secret is {secret} - copy it now.")


class WebhookAttemptInline(admin.TabularInline[WebhookAttempt, WebhookMessage]):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "outcome", "status_code", "error", "duration_ms", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_type", "endpoint", "status", "attempt_count", "next_attempt_at", "created_at")
    list_filter = ("status", "tenant")
    search_fields = ("id", "event_type")
    inlines = [WebhookAttemptInline]
    actions = ["replay"]

    @admin.action(description="Replay (send again with the same webhook-id)")
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookMessage]) -> None:
        done = 0
        for message in queryset.select_related("endpoint", "tenant"):
            try:
                webhooks.message_replay(message=message, actor=actor_from_request(request))
                done += 1
            except ApplicationError as exc:
                messages.error(request, f"{message.webhook_id}: {exc.message}")
        messages.success(request, f"{done} message(s) queued again.")


@admin.register(Watcher)
class WatcherAdmin(admin.ModelAdmin[Watcher]):
    list_display = ("recipient", "subject_type", "subject_id", "tenant", "created_at")
    list_filter = ("tenant", "subject_type")
    search_fields = ("recipient", "subject_id")
