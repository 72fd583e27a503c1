"""What the flows API reads and answers."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.flows.models import Flow, FlowInstance, FlowRun


class FlowStepSerializer(serializers.Serializer[Any]):
    """One step as given; `type` says which other fields it takes (docs/flows.md)."""

    id = serializers.CharField(max_length=64)
    type = serializers.ChoiceField(choices=["send", "delay", "digest", "branch", "fallback", "exit"])
    channels = serializers.ListField(child=serializers.CharField(), required=False)
    duration = serializers.JSONField(required=False, help_text='Seconds, or "30s", "10m", "2h", "1d".')
    until = serializers.CharField(required=False, help_text='A local time of day, "HH:MM".')
    window_minutes = serializers.IntegerField(required=False)
    key = serializers.CharField(required=False)
    wait = serializers.JSONField(required=False)
    on = serializers.ListField(child=serializers.CharField(), required=False)
    then = serializers.CharField(required=False)
    next = serializers.CharField(required=False)
    # `if` and `else` are Python keywords: declared below.


FlowStepSerializer._declared_fields["if"] = serializers.JSONField(
    required=False, help_text='{"channel": "in_app", "state": ["read"]} or {"cel": "payload.total > 100"}'
)
FlowStepSerializer._declared_fields["else"] = serializers.CharField(required=False)


class CancelOnSerializer(serializers.Serializer[Any]):
    event_type = serializers.CharField()
    key = serializers.CharField()


class FlowDocumentSerializer(serializers.Serializer[Any]):
    """A flow definition (checked whole by the service, which answers field errors)."""

    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(required=False, allow_blank=True, max_length=200)
    template = serializers.SlugField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=100,
        help_text="The template a notification uses by default (empty or null: none; each notification names one).",
    )
    cancel_on = CancelOnSerializer(
        required=False, allow_null=True, help_text="Ends the flow on a matching event; null: none."
    )
    steps = FlowStepSerializer(many=True)


class FlowSerializer(serializers.ModelSerializer[Flow]):
    version = serializers.IntegerField(source="current_version.version", default=None, read_only=True)
    template = serializers.CharField(source="current_version.template_key", default="", read_only=True)
    cancel_on = serializers.JSONField(source="current_version.cancel_on", default=None, read_only=True)
    document = serializers.JSONField(source="current_version.document", default=None, read_only=True)
    steps = serializers.JSONField(source="current_version.steps", default=None, read_only=True)

    class Meta:
        model = Flow
        fields = [
            "key",
            "name",
            "version",
            "template",
            "cancel_on",
            "document",
            "steps",
            "archived_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class FlowDiagramSerializer(serializers.Serializer[Any]):
    flow = serializers.CharField()
    version = serializers.IntegerField()
    mermaid = serializers.CharField()


class FlowInstanceSerializer(serializers.ModelSerializer[FlowInstance]):
    notification_id = serializers.UUIDField(read_only=True)
    flow = serializers.CharField(source="flow_version.flow.key", read_only=True)
    version = serializers.IntegerField(source="flow_version.version", read_only=True)
    counts = serializers.SerializerMethodField(help_text="{step id: {run status: count}}")
    mermaid = serializers.SerializerMethodField(help_text="The flow with the number of runs at each step.")

    class Meta:
        model = FlowInstance
        fields = [
            "notification_id",
            "flow",
            "version",
            "status",
            "recipient_count",
            "cancel_reason",
            "counts",
            "mermaid",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.DictField(child=serializers.IntegerField())))
    def get_counts(self, instance: FlowInstance) -> dict[str, dict[str, int]]:
        return self.context["counts"]

    def get_mermaid(self, instance: FlowInstance) -> str:
        return self.context["mermaid"]


class FlowRunSerializer(serializers.ModelSerializer[FlowRun]):
    recipient = serializers.CharField(source="recipient.external_id", read_only=True)
    history = serializers.JSONField(read_only=True, help_text="[{step, at, event, why?, to?, deliveries?}]")

    class Meta:
        model = FlowRun
        fields = [
            "id",
            "notification_id",
            "recipient",
            "step",
            "phase",
            "status",
            "due_at",
            "deadline_at",
            "attempts",
            "history",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields
