"""API shapes for events, rules and webhooks. Validation beyond shapes lives in the services."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.events.models import (
    Event,
    Rule,
    RuleExecution,
    Watcher,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)


class SubjectSerializer(serializers.Serializer[Any]):
    type = serializers.CharField(max_length=64, required=False, default="", allow_blank=True)
    id = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class EventCreateSerializer(serializers.Serializer[Any]):
    type = serializers.CharField(max_length=200, help_text="Dotted lower-case, e.g. order.paid.")
    subject = SubjectSerializer(required=False)
    payload = serializers.DictField(required=False, default=dict)
    # Any JSON here: the service checks the shape, so a bad actor is a 422 `invalid_actor` like a bad type.
    actor = serializers.JSONField(
        required=False,
        help_text='Who did it, e.g. {"type": "user", "id": "u-7"}; rules see it as event.actor. '
        "Default: the calling API key.",
    )


class RuleExecutionSerializer(serializers.ModelSerializer[RuleExecution]):
    rule_id = serializers.UUIDField()
    event_id = serializers.UUIDField()
    rule_name = serializers.CharField(source="rule.name", read_only=True)

    class Meta:
        model = RuleExecution
        fields = ["id", "rule_id", "rule_name", "event_id", "outcome", "actions", "error", "duration_ms", "created_at"]


class EventSerializer(serializers.ModelSerializer[Event]):
    subject = serializers.SerializerMethodField()

    class Meta:
        model = Event
        fields = [
            "id",
            "type",
            "subject",
            "payload",
            "actor",
            "source",
            "depth",
            "status",
            "attempts",
            "last_error",
            "next_attempt_at",
            "created_at",
            "processed_at",
            "dead_at",
        ]
        read_only_fields = ["depth", "attempts", "last_error", "next_attempt_at", "dead_at"]

    @extend_schema_field(SubjectSerializer)
    def get_subject(self, obj: Event) -> dict[str, str]:
        return obj.subject


class EventDetailSerializer(EventSerializer):
    rule_executions = RuleExecutionSerializer(many=True, read_only=True)
    webhook_messages = serializers.SerializerMethodField()

    class Meta(EventSerializer.Meta):
        fields = [*EventSerializer.Meta.fields, "rule_executions", "webhook_messages"]

    @extend_schema_field(serializers.ListField(child=serializers.DictField()))
    def get_webhook_messages(self, obj: Event) -> list[dict[str, Any]]:
        return [
            {"id": str(m.pk), "endpoint_id": str(m.endpoint_id), "status": m.status, "attempt_count": m.attempt_count}
            for m in obj.webhook_messages.all()
        ]


class RuleSerializer(serializers.ModelSerializer[Rule]):
    class Meta:
        model = Rule
        fields = [
            "id",
            "name",
            "description",
            "event_type",
            "condition",
            "actions",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


class RuleWriteSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, default="", allow_blank=True)
    event_type = serializers.CharField(max_length=200, help_text="A type, a prefix like order.*, or *.")
    condition = serializers.CharField(required=False, default="", allow_blank=True, help_text="CEL over `event`.")
    actions = serializers.ListField(child=serializers.DictField(), allow_empty=False)
    enabled = serializers.BooleanField(required=False, default=True)


class WebhookEndpointSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    secret_rotation_ends_at = serializers.DateTimeField(source="previous_secret_expires_at", read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "failing_since",
            "secret_rotation_ends_at",
            "created_at",
            "updated_at",
        ]


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(read_only=True, help_text="The signing secret. Shown once: store it now.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookEndpointCreateSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(max_length=2000)
    description = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)
    event_types = serializers.ListField(child=serializers.CharField(max_length=200), required=False, default=list)
    enabled = serializers.BooleanField(required=False, default=True)
    secret = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="Your own whsec_… secret; one is generated otherwise."
    )


class WebhookEndpointUpdateSerializer(serializers.Serializer[Any]):
    url = serializers.CharField(max_length=2000, required=False)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    event_types = serializers.ListField(child=serializers.CharField(max_length=200), required=False)
    enabled = serializers.BooleanField(required=False)


class RotateSecretSerializer(serializers.Serializer[Any]):
    overlap_seconds = serializers.IntegerField(
        required=False, min_value=0, max_value=7 * 24 * 3600, help_text="How long the old secret keeps signing too."
    )
    secret = serializers.CharField(required=False, allow_blank=True, default="")


class WebhookAttemptSerializer(serializers.ModelSerializer[WebhookAttempt]):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "outcome", "status_code", "response_body", "error", "duration_ms", "created_at"]


class WebhookMessageSerializer(serializers.ModelSerializer[WebhookMessage]):
    webhook_id = serializers.CharField(read_only=True)
    endpoint_id = serializers.UUIDField()
    event_id = serializers.UUIDField()

    class Meta:
        model = WebhookMessage
        fields = [
            "id",
            "webhook_id",
            "endpoint_id",
            "event_id",
            "event_type",
            "status",
            "attempt_count",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "delivered_at",
            "created_at",
            "updated_at",
        ]


class WebhookMessageDetailSerializer(WebhookMessageSerializer):
    payload = serializers.SerializerMethodField()
    attempts = WebhookAttemptSerializer(many=True, read_only=True)

    class Meta(WebhookMessageSerializer.Meta):
        fields = [*WebhookMessageSerializer.Meta.fields, "payload", "attempts"]

    @extend_schema_field(serializers.DictField())
    def get_payload(self, obj: WebhookMessage) -> Any:
        return json.loads(obj.body)


class BulkReplaySerializer(serializers.Serializer[Any]):
    endpoint_id = serializers.UUIDField(required=False)
    since = serializers.DateTimeField(required=False)
    ids = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=1000)


class EventBulkReplaySerializer(serializers.Serializer[Any]):
    ids = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=1000)
    type = serializers.CharField(max_length=200, required=False, help_text="An event type, `order.*`, or `*`.")
    since = serializers.DateTimeField(required=False, help_text="Only events recorded at or after this time.")


class BulkReplayResultSerializer(serializers.Serializer[Any]):
    replayed = serializers.IntegerField()
    ids = serializers.ListField(child=serializers.UUIDField())


class WatcherSerializer(serializers.ModelSerializer[Watcher]):
    subject = serializers.SerializerMethodField()

    class Meta:
        model = Watcher
        fields = ["id", "subject", "recipient", "created_at"]

    @extend_schema_field(SubjectSerializer)
    def get_subject(self, obj: Watcher) -> dict[str, str]:
        return {"type": obj.subject_type, "id": obj.subject_id}


class WatcherCreateSerializer(serializers.Serializer[Any]):
    subject = SubjectSerializer()
    recipient = serializers.CharField(max_length=200, help_text="The recipient's external id.")
