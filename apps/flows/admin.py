"""Flows in Django admin: definitions (validated on save, a new version each time), instances
and each recipient's run with its history."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from apps.core.errors import ApplicationError
from apps.flows import diagram
from apps.flows.models import Flow, FlowInstance, FlowRun, FlowVersion
from apps.flows.services.definitions import flow_save


class FlowForm(forms.ModelForm):  # type: ignore[type-arg]
    document = forms.JSONField(help_text="The flow definition (docs/flows.md); saving makes a new version.")

    class Meta:
        model = Flow
        fields = ["tenant", "document"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.current_version:
            self.fields["document"].initial = self.instance.current_version.document

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        tenant, document = cleaned.get("tenant"), cleaned.get("document")
        if tenant is not None and document is not None:
            try:
                self.saved = flow_save(tenant=tenant, document=document)[0]
            except ApplicationError as exc:
                raise ValidationError(
                    [f"{name}: {'; '.join(map(str, problems))}" for name, problems in (exc.fields or {}).items()]
                    or exc.message
                ) from exc
        return cleaned


class FlowVersionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = FlowVersion
    extra = 0
    can_delete = False
    fields = ["version", "template_key", "cancel_on", "created_at"]
    readonly_fields = ["version", "template_key", "cancel_on", "created_at"]


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = FlowForm
    list_display = ["key", "tenant", "current_version", "archived_at", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["key", "name"]
    readonly_fields = ["mermaid"]
    inlines = [FlowVersionInline]

    @admin.display(description="Mermaid")
    def mermaid(self, flow: Flow) -> str:
        return diagram.mermaid(flow.current_version.steps) if flow.current_version else ""

    def save_model(self, request: HttpRequest, obj: Flow, form: Any, change: bool) -> None:
        """The form's clean() saved the new version through the service; point `obj` at its flow."""
        obj.pk = form.saved.flow_id
        obj.refresh_from_db()


@admin.register(FlowInstance)
class FlowInstanceAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["notification", "tenant", "flow_version", "status", "recipient_count", "started_at", "finished_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in FlowInstance._meta.fields]


@admin.register(FlowRun)
class FlowRunAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "notification_id", "recipient", "step", "phase", "status", "due_at", "attempts"]
    list_filter = ["status", "phase"]
    search_fields = ["notification_id", "recipient__external_id"]
    readonly_fields = [*(f.name for f in FlowRun._meta.fields if f.name != "history"), "history_pretty"]
    exclude = ["history"]
    raw_id_fields = ["recipient"]

    @admin.display(description="History")
    def history_pretty(self, run: FlowRun) -> str:
        return json.dumps(run.history, indent=2)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
