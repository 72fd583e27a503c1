"""API shapes for workflows. Validation of definitions lives in spec.py, of transitions in guards.py."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.workflows import tracking
from apps.workflows.models import TransitionIntent, TransitionLog, WorkflowDefinition, WorkflowInstance


class WorkflowDefinitionSerializer(serializers.ModelSerializer[WorkflowDefinition]):
    states = serializers.SerializerMethodField()
    initial = serializers.SerializerMethodField(method_name="get_initial_state")
    finals = serializers.SerializerMethodField()
    transitions = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowDefinition
        fields = [
            "id",
            "key",
            "version",
            "name",
            "description",
            "states",
            "initial",
            "finals",
            "transitions",
            "created_at",
            "created_by",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_states(self, obj: WorkflowDefinition) -> list[Any]:
        return list(obj.spec["states"])

    def get_initial_state(self, obj: WorkflowDefinition) -> str:
        return str(obj.spec["initial"])

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_finals(self, obj: WorkflowDefinition) -> list[str]:
        return list(obj.spec["finals"])

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_transitions(self, obj: WorkflowDefinition) -> list[Any]:
        return list(obj.spec["transitions"])


class WorkflowDocumentSerializer(serializers.Serializer[Any]):
    """For the schema only: the body is the definition document, validated by apps/workflows/spec.py."""

    key = serializers.SlugField()
    name = serializers.CharField(required=False)
    description = serializers.CharField(required=False)
    states = serializers.ListField(child=serializers.JSONField())
    initial = serializers.CharField()
    finals = serializers.ListField(child=serializers.CharField(), required=False)
    transitions = serializers.ListField(child=serializers.DictField())


class WorkflowInstanceSerializer(serializers.ModelSerializer[WorkflowInstance]):
    workflow = serializers.SerializerMethodField()
    subject = serializers.SerializerMethodField()
    is_final = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowInstance
        fields = ["id", "workflow", "subject", "state", "is_final", "data", "version", "created_at", "updated_at"]

    @extend_schema_field(serializers.DictField())
    def get_workflow(self, obj: WorkflowInstance) -> dict[str, Any]:
        return {"key": obj.workflow_key, "version": obj.definition.version}

    @extend_schema_field(serializers.DictField())
    def get_subject(self, obj: WorkflowInstance) -> dict[str, str]:
        return obj.subject

    def get_is_final(self, obj: WorkflowInstance) -> bool:
        return obj.state in obj.definition.parsed.finals


class AvailableTransitionSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    to = serializers.CharField()
    description = serializers.CharField()
    payload_schema = serializers.DictField(allow_null=True)
    checked_on_apply = serializers.ListField(
        child=serializers.CharField(), help_text="Guard conditions that read the payload: decided when applied."
    )


class UnavailableTransitionSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    to = serializers.CharField()
    reason = serializers.DictField(help_text="{code, message}: transition_forbidden or guard_failed.")


class WorkflowInstanceDetailSerializer(WorkflowInstanceSerializer):
    available_transitions = serializers.SerializerMethodField()
    unavailable_transitions = serializers.SerializerMethodField()

    class Meta(WorkflowInstanceSerializer.Meta):
        fields = [*WorkflowInstanceSerializer.Meta.fields, "available_transitions", "unavailable_transitions"]

    @extend_schema_field(UnavailableTransitionSerializer(many=True))
    def get_unavailable_transitions(self, obj: WorkflowInstance) -> list[dict[str, Any]]:
        listed = self.context.get("transitions", [])
        return [{k: t[k] for k in ("name", "to", "reason")} for t in listed if not t["available"]]

    @extend_schema_field(AvailableTransitionSerializer(many=True))
    def get_available_transitions(self, obj: WorkflowInstance) -> list[dict[str, Any]]:
        listed = self.context.get("transitions", [])
        return [
            {k: t[k] for k in ("name", "to", "description", "payload_schema", "checked_on_apply")}
            for t in listed
            if t["available"]
        ]


class InstanceCreateSerializer(serializers.Serializer[Any]):
    subject_id = serializers.CharField(max_length=200)
    subject_type = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # Declared here: a class attribute named `data` would hide Serializer.data.
        fields = super().get_fields()
        fields["data"] = serializers.DictField(required=False, default=dict, help_text="The instance's initial data.")
        return fields


class TransitionRequestSerializer(serializers.Serializer[Any]):
    transition = serializers.CharField(max_length=64)
    payload = serializers.DictField(required=False, default=dict)
    expected_state = serializers.CharField(
        max_length=64,
        required=False,
        default="",
        allow_blank=True,
        help_text="Apply only if the instance is still in this state; otherwise the intent ends `conflict`.",
    )
    if_version = serializers.IntegerField(
        min_value=1,
        required=False,
        default=None,
        allow_null=True,
        help_text="Apply only to the instance at this version (from GET …/instances/<subject_id>/); refused "
        "`conflict` at once if the instance is already past it. By default, the version when the intent is accepted.",
    )


class TransitionIntentSerializer(serializers.ModelSerializer[TransitionIntent]):
    workflow = serializers.CharField(source="instance.workflow_key", read_only=True)
    subject = serializers.SerializerMethodField()
    actor = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    task_id = serializers.CharField(source="task_execution_id", read_only=True)
    observed_version = serializers.IntegerField(
        read_only=True,
        help_text="The instance version this intent applies to (`if_version`, else the version when accepted); "
        "if the instance has left it, the intent ends `conflict`.",
    )
    poll_url = serializers.SerializerMethodField()

    class Meta:
        model = TransitionIntent
        fields = [
            "id",
            "status",
            "workflow",
            "subject",
            "transition",
            "payload",
            "expected_state",
            "observed_version",
            "actor",
            "error",
            "task_id",
            "poll_url",
            "created_at",
            "finished_at",
        ]

    @extend_schema_field(serializers.DictField())
    def get_subject(self, obj: TransitionIntent) -> dict[str, str]:
        return obj.instance.subject

    @extend_schema_field(serializers.DictField())
    def get_actor(self, obj: TransitionIntent) -> dict[str, Any]:
        return {k: obj.actor.get(k) for k in ("type", "id", "name")}

    @extend_schema_field(serializers.DictField(allow_null=True))
    def get_error(self, obj: TransitionIntent) -> dict[str, Any] | None:
        return obj.error

    def get_poll_url(self, obj: TransitionIntent) -> str:
        if obj.task_execution_id:
            return tracking.poll_url(obj.task_execution_id)
        return f"/api/v1/transition-intents/{obj.pk}/"


class TransitionLogSerializer(serializers.ModelSerializer[TransitionLog]):
    kind = serializers.SerializerMethodField()
    to = serializers.CharField(source="to_state")
    actor = serializers.SerializerMethodField()
    intent_id = serializers.UUIDField(
        source="intent_ref", allow_null=True, help_text="The intent applied; kept after the intent is purged."
    )

    class Meta:
        model = TransitionLog
        fields = [
            "id",
            "kind",
            "transition",
            "from_state",
            "to",
            "actor",
            "payload",
            "intent_id",
            "instance_version",
            "created_at",
        ]

    def get_kind(self, obj: TransitionLog) -> str:
        return "transition" if obj.transition else "created"

    @extend_schema_field(serializers.DictField())
    def get_actor(self, obj: TransitionLog) -> dict[str, Any]:
        return {k: obj.actor.get(k) for k in ("type", "id", "name")}


class DiagramSerializer(serializers.Serializer[Any]):
    workflow = serializers.CharField()
    version = serializers.IntegerField()
    current_state = serializers.CharField(allow_null=True)
    mermaid = serializers.CharField()
    dot = serializers.CharField()
