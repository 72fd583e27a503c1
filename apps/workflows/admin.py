"""Django admin for workflows: definitions are edited as YAML/JSON and every save is a new version."""

from __future__ import annotations

from typing import Any

import yaml
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.errors import ApplicationError
from apps.tenancy.actors import actor_from_request
from apps.workflows.models import TransitionIntent, TransitionLog, WorkflowDefinition, WorkflowInstance
from apps.workflows.services.definitions import definition_save, document_parse
from apps.workflows.spec import parse_spec


class WorkflowDefinitionForm(forms.ModelForm[WorkflowDefinition]):
    document = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 36, "cols": 110, "style": "font-family: monospace"}),
        help_text="The definition in YAML or JSON (see docs/workflows.md). Saving stores a new version; "
        "instances keep the version they started on.",
    )

    class Meta:
        model = WorkflowDefinition
        fields = ["tenant"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["document"].initial = yaml.safe_dump(self.instance.spec, sort_keys=False, allow_unicode=True)
            self.fields["tenant"].disabled = True

    def clean_document(self) -> Any:
        try:
            document = document_parse(self.cleaned_data["document"])
            parse_spec(document)
        except ApplicationError as exc:
            problems = [f"{where or 'document'}: {m}" for where, found in exc.fields.items() for m in found]
            raise forms.ValidationError(problems or [exc.message]) from exc
        return document


@admin.register(WorkflowDefinition)
class WorkflowDefinitionAdmin(admin.ModelAdmin[WorkflowDefinition]):
    form = WorkflowDefinitionForm
    list_display = ("key", "version", "name", "tenant", "created_by", "created_at")
    list_filter = ("tenant",)
    search_fields = ("key", "name")
    ordering = ("tenant", "key", "-version")

    def save_model(self, request: HttpRequest, obj: WorkflowDefinition, form: Any, change: bool) -> None:
        tenant = obj.tenant if change else form.cleaned_data["tenant"]
        definition, created = definition_save(
            tenant=tenant, document=form.cleaned_data["document"], actor=actor_from_request(request)
        )
        # The admin redirects to `obj`: point it at the version just saved, not at the row edited.
        obj.pk, obj.version, obj.key = definition.pk, definition.version, definition.key
        obj._state.adding = False
        if created:
            messages.success(request, f"Saved {definition.key} as version {definition.version}.")
        else:
            messages.info(request, f"No change: {definition.key} stays at version {definition.version}.")

    def has_delete_permission(self, request: HttpRequest, obj: WorkflowDefinition | None = None) -> bool:
        return False  # instances point at their version; a definition is superseded, never deleted


class TransitionLogInline(admin.TabularInline[TransitionLog, WorkflowInstance]):
    model = TransitionLog
    extra = 0
    can_delete = False
    fields = ("instance_version", "transition", "from_state", "to_state", "actor", "payload", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WorkflowInstance)
class WorkflowInstanceAdmin(ReadOnlyAdmin):
    list_display = ("workflow_key", "subject_type", "subject_id", "state", "version", "tenant", "updated_at")
    list_filter = ("tenant", "workflow_key", "state")
    search_fields = ("subject_id",)
    inlines = [TransitionLogInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowInstance]:
        return super().get_queryset(request).select_related("definition", "tenant")


@admin.register(TransitionIntent)
class TransitionIntentAdmin(ReadOnlyAdmin):
    list_display = ("id", "transition", "instance", "status", "error_code", "created_at", "finished_at")
    list_filter = ("status", "error_code")
    search_fields = ("id", "instance__subject_id")
