"""API shapes of the notifications app. Input serializers check types only; the services check meaning."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.core.errors import Unprocessable
from apps.notifications import hooks, rendering, selectors
from apps.notifications.models import (
    CHANNEL_CHOICES,
    Category,
    Delivery,
    DeliveryAttempt,
    Device,
    Digest,
    Notification,
    Recipient,
    Template,
    TemplateVersion,
    Topic,
)
from apps.notifications.validators import (
    MAX_KEY_LENGTH,
    MAX_RULE_WINDOW_MINUTES,
    messages,
    validate_external_id,
    validate_locale,
    validate_phone,
    validate_timezone,
)


def channel_field() -> serializers.ChoiceField:
    return serializers.ChoiceField(choices=rendering.CHANNELS)


def _django(check: Any) -> Any:
    """A DRF validator from one of validators.py's functions."""

    def run(value: Any) -> None:
        try:
            check(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(messages(exc)) from exc

    return run


def notification_url(notification: Notification) -> str:
    return reverse("notification-detail", kwargs={"version": "v1", "pk": notification.pk})


# --- Notifications -----------------------------------------------------------------------------


# The digest rule as `apps.notifications.services.digest.digest_rule_errors` checks it, for the schema.
DIGEST_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "key": {"type": "string", "maxLength": MAX_KEY_LENGTH, "description": "Jinja over the variables."},
        "window_minutes": {"type": "integer", "minimum": 1, "maximum": MAX_RULE_WINDOW_MINUTES},
    },
    "required": ["window_minutes"],
    "additionalProperties": False,
}


@extend_schema_field(DIGEST_RULE_SCHEMA)
class DigestRuleField(serializers.DictField):
    """A digest rule: an object the service checks key by key (the schema says which keys)."""


@extend_schema_field({**DIGEST_RULE_SCHEMA, "nullable": True})
class NullableDigestRuleField(serializers.JSONField):
    """A digest rule or null (none), checked by the service."""


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "oneOf": [
                {"type": "string", "description": "external_id of an existing recipient"},
                {"$ref": "#/components/schemas/RecipientRequest"},
            ]
        },
    }
)
class RecipientListField(serializers.ListField):
    child = serializers.JSONField()


class NotificationCreateSerializer(serializers.Serializer[Any]):
    template = serializers.CharField(required=False, help_text="Template key. Or give inline `content`.")
    content = serializers.DictField(
        required=False, help_text="Inline content {channel: {field: jinja source}}, instead of a template."
    )
    category = serializers.SlugField(required=False, help_text="Category of inline content (default `general`).")
    payload = serializers.DictField(required=False, default=dict, help_text="Template variables.")
    recipients = RecipientListField(
        required=False, help_text="External ids and/or recipient objects (upserted). Or give a `topic`."
    )
    topic = serializers.SlugField(required=False, help_text="Send to every subscriber of this topic.")
    channels = serializers.ListField(
        child=channel_field(), required=False, help_text="Default: the template's default channels."
    )
    priority = serializers.ChoiceField(choices=Notification.Priority.choices, default=Notification.Priority.NORMAL)
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True)
    dedup_key = serializers.CharField(required=False, default="", max_length=255, allow_blank=True)
    dedup_window_seconds = serializers.IntegerField(required=False, min_value=1, max_value=30 * 86400)
    metadata = serializers.DictField(required=False, default=dict)
    digest = DigestRuleField(
        required=False,
        help_text='Digest rule (default: the template\'s): {"key": "post-{{ post_id }}", "window_minutes": 10}. '
        "Deliveries with the same key collect for that long, then go as one digest (docs/scheduling.md).",
    )
    flow = serializers.SlugField(
        required=False,
        max_length=64,
        help_text="Run through this flow's steps (docs/flows.md); its steps choose the channels.",
    )


# The common body (a template, recipients by external id, a payload, maybe channels and a priority) is
# read without building the serializer's 14 fields on every POST (about 1,500 Python calls, docs/
# benchmarks.md "API"); anything else, and anything the serializer would refuse or change, goes through
# it. tests/notifications/test_create_body.py pins the two to the same validated data.
_LEAN_KEYS = frozenset({"template", "recipients", "payload", "channels", "priority"})
_PRIORITIES = {str(value): value for value, _ in Notification.Priority.choices}
_CHANNELS = {str(value): value for value in rendering.CHANNELS}


def _plain_text(value: Any) -> bool:
    """A string `CharField` keeps as it is: not blank, no surrounding space, no NUL, no surrogate."""
    return type(value) is str and value != "" and value.isascii() and "\x00" not in value and value.strip() == value


def _lean_create_data(data: Any) -> dict[str, Any] | None:
    """What `NotificationCreateSerializer(data=data).validated_data` is, when the body is of the common
    shape with every value of the exact type the serializer keeps unchanged; None otherwise."""
    if type(data) is not dict or not data.keys() <= _LEAN_KEYS:
        return None
    out: dict[str, Any] = {"payload": {}, "priority": Notification.Priority.NORMAL, "dedup_key": "", "metadata": {}}
    if "template" in data:
        if not _plain_text(data["template"]):
            return None
        out["template"] = data["template"]
    if "payload" in data:
        if type(data["payload"]) is not dict:
            return None
        out["payload"] = {str(key): value for key, value in data["payload"].items()}
    if "recipients" in data:
        recipients = data["recipients"]
        if type(recipients) is not list or not all(type(item) is str for item in recipients):
            return None
        out["recipients"] = list(recipients)
    if "channels" in data:
        channels = data["channels"]
        if type(channels) is not list or not all(type(c) is str and c in _CHANNELS for c in channels):
            return None
        out["channels"] = [_CHANNELS[c] for c in channels]
    if "priority" in data:
        if type(data["priority"]) is not str or data["priority"] not in _PRIORITIES:
            return None
        out["priority"] = _PRIORITIES[data["priority"]]
    return out


def notification_create_data(data: Any) -> dict[str, Any]:
    """The validated body of `POST /api/v1/notifications/`; raises the serializer's ValidationError."""
    lean = _lean_create_data(data)
    if lean is not None:
        return lean
    body = NotificationCreateSerializer(data=data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


class NotificationAcceptedSerializer(serializers.Serializer[Any]):
    id = serializers.UUIDField()
    status = serializers.CharField()
    url = serializers.CharField(help_text="Poll here for progress and per-channel counts.")


class NotificationSerializer(serializers.ModelSerializer[Notification]):
    template = serializers.CharField(source="template.key", default=None, read_only=True)
    template_version = serializers.IntegerField(source="template_version.version", default=None, read_only=True)
    category = serializers.CharField(source="category.key", read_only=True)
    topic = serializers.CharField(source="topic.key", default=None, read_only=True)
    counts = serializers.SerializerMethodField(help_text="{channel: {delivery status: count}}")
    totals = serializers.SerializerMethodField(help_text="{delivery status: count} over every channel")

    class Meta:
        model = Notification
        fields = [
            "id",
            "status",
            "template",
            "template_version",
            "category",
            "channels",
            "priority",
            "topic",
            "recipient_count",
            "payload",
            "metadata",
            "scheduled_at",
            "digest",
            "dedup_key",
            "idempotency_key",
            "error",
            "created_at",
            "fanout_started_at",
            "dispatched_at",
            "completed_at",
            "cancelled_at",
            "counts",
            "totals",
        ]
        read_only_fields = fields

    def _counts(self, obj: Notification) -> dict[str, dict[str, int]]:
        cache = self.context.setdefault("counts", {})
        if obj.pk not in cache:
            cache.update(selectors.notification_counts([obj.pk]))
        return cache[obj.pk]  # type: ignore[no-any-return]

    @extend_schema_field(
        {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}}
    )
    def get_counts(self, obj: Notification) -> dict[str, dict[str, int]]:
        return self._counts(obj)

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_totals(self, obj: Notification) -> dict[str, int]:
        return selectors.totals(self._counts(obj))


class CancelResultSerializer(serializers.Serializer[Any]):
    notification = NotificationSerializer()
    deliveries_cancelled = serializers.IntegerField()


class RescheduleSerializer(serializers.Serializer[Any]):
    whole_on_patch = True  # PATCH …/reschedule/ needs `scheduled_at` too (apps/core/schema.py)

    scheduled_at = serializers.DateTimeField(help_text="The new time (with a zone); a past time sends at once.")


# --- Deliveries --------------------------------------------------------------------------------


class DeliveryAttemptSerializer(serializers.ModelSerializer[DeliveryAttempt]):
    class Meta:
        model = DeliveryAttempt
        fields = [
            "number",
            "provider",
            "outcome",
            "status_code",
            "error_code",
            "error",
            "provider_message_id",
            "latency_ms",
            "created_at",
        ]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer[Delivery]):
    recipient = serializers.CharField(source="recipient.external_id", read_only=True)
    notification = serializers.UUIDField(source="notification_id", read_only=True)
    template_version = serializers.IntegerField(source="template_version.version", default=None, read_only=True)

    class Meta:
        model = Delivery
        fields = [
            "id",
            "notification",
            "recipient",
            "channel",
            "status",
            "suppression_reason",
            "attempts",
            "next_attempt_at",
            "provider",
            "provider_message_id",
            "template_version",
            "error_code",
            "last_error",
            "created_at",
            "queued_at",
            "sent_at",
            "delivered_at",
            "failed_at",
            "read_at",
            "seen_at",
            "archived_at",
        ]
        read_only_fields = fields


class EngagementOpensSerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    first_at = serializers.DateTimeField(allow_null=True)
    last_at = serializers.DateTimeField(allow_null=True)


class EngagementClickSerializer(EngagementOpensSerializer):
    url = serializers.URLField()


class EngagementSerializer(serializers.Serializer[Any]):
    opens = EngagementOpensSerializer()
    clicks = EngagementClickSerializer(many=True)


class DeliveryRunSerializer(serializers.Serializer[Any]):
    """The recipient's run through the notification's flow, as the flows app reports it."""

    id = serializers.IntegerField()
    flow = serializers.CharField(help_text="The flow's key.")
    version = serializers.IntegerField()
    step = serializers.CharField(help_text="The step the run is at (or ended at).")
    phase = serializers.CharField()
    status = serializers.CharField(help_text="waiting, running, done, cancelled or failed.")
    due_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    history = serializers.JSONField(help_text="[{step, at, event, why?, to?, deliveries?}]")


class DeliveryDetailSerializer(DeliverySerializer):
    attempts_log = DeliveryAttemptSerializer(many=True, read_only=True)
    engagement = serializers.SerializerMethodField(help_text="Email opens and clicks (tracking links).")
    flow_run = serializers.SerializerMethodField(
        help_text="The recipient's run through the notification's flow, with its history; null when the "
        "notification was not sent through a flow."
    )

    class Meta(DeliverySerializer.Meta):
        fields = [
            *DeliverySerializer.Meta.fields,
            "rendered",
            "lease_expires_at",
            "attempts_log",
            "engagement",
            "flow_run",
        ]
        read_only_fields = fields

    @extend_schema_field(DeliveryRunSerializer(allow_null=True))
    def get_flow_run(self, delivery: Delivery) -> dict[str, Any] | None:
        run = hooks.delivery_run(
            tenant_id=delivery.tenant_id, notification_id=delivery.notification_id, recipient_id=delivery.recipient_id
        )
        return None if run is None else DeliveryRunSerializer(run).data

    @extend_schema_field(EngagementSerializer)
    def get_engagement(self, delivery: Delivery) -> dict[str, Any]:
        summary = selectors.engagement_summary(tenant_id=delivery.tenant_id, delivery_id=delivery.pk)
        return EngagementSerializer(summary).data


# --- Recipients, devices, topics ---------------------------------------------------------------


class RecipientSerializer(serializers.ModelSerializer[Recipient]):
    external_id = serializers.CharField(max_length=255, validators=[_django(validate_external_id)])
    phone = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="E.164, e.g. +14155550100.",
        validators=[_django(validate_phone)],
    )
    locale = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, validators=[_django(validate_locale)]
    )
    timezone = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, validators=[_django(validate_timezone)]
    )
    unsubscribed = serializers.BooleanField(
        required=False, help_text="Global unsubscribe from every non-critical notification."
    )
    data = serializers.DictField(  # type: ignore[assignment]  # a field named like Serializer.data
        required=False, allow_null=True, help_text="Your own attributes, a JSON object (null: none)."
    )

    class Meta:
        model = Recipient
        fields = [
            "external_id",
            "name",
            "email",
            "phone",
            "locale",
            "timezone",
            "chat_address",
            "webhook_url",
            "data",
            "unsubscribed",
            "unsubscribed_at",
            "has_webhook_secret",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["unsubscribed_at", "has_webhook_secret", "created_at", "updated_at"]
        # `recipient_clean` reads null as "none" for these (an empty text), as the schema now says.
        extra_kwargs = {name: {"allow_null": True} for name in ("name", "email", "chat_address", "webhook_url")}

    has_webhook_secret = serializers.SerializerMethodField(
        help_text="Whether its webhooks are signed with a secret of its own (POST …/webhook-secret/)."
    )

    def get_has_webhook_secret(self, instance: Recipient) -> bool:
        return bool(instance.webhook_secret_encrypted)

    def to_representation(self, instance: Recipient) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["unsubscribed"] = instance.unsubscribed_at is not None
        return data


class WebhookSecretSerializer(serializers.Serializer[Any]):
    recipient = serializers.CharField()
    secret = serializers.CharField(help_text="`whsec_…`: shown once; verify the recipient's webhooks with it.")


class RecipientBulkSerializer(serializers.Serializer[Any]):
    recipients = serializers.ListField(child=RecipientSerializer(), max_length=10000, allow_empty=False)


class RecipientBulkResultSerializer(serializers.Serializer[Any]):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()


class DeviceSerializer(serializers.ModelSerializer[Device]):
    class Meta:
        model = Device
        fields = ["id", "platform", "token", "active", "deactivated_reason", "created_at", "updated_at"]
        read_only_fields = ["id", "active", "deactivated_reason", "created_at", "updated_at"]
        # The token's uniqueness is handled by the upsert (a token seen before moves here).
        extra_kwargs: dict[str, dict[str, Any]] = {"token": {"validators": []}}


class TopicSerializer(serializers.ModelSerializer[Topic]):
    subscribers = serializers.SerializerMethodField()

    class Meta:
        model = Topic
        fields = ["key", "name", "description", "created_at", "subscribers"]
        read_only_fields = ["created_at", "subscribers"]

    def get_subscribers(self, topic: Topic) -> int:
        # Lists annotate the count; a topic just created has none (and no annotation).
        return int(getattr(topic, "subscribers", 0))


class SubscribersSerializer(serializers.Serializer[Any]):
    recipients = serializers.ListField(
        child=serializers.CharField(max_length=255), max_length=10000, allow_empty=False, help_text="External ids."
    )


class SubscribersResultSerializer(serializers.Serializer[Any]):
    added = serializers.IntegerField(required=False)
    removed = serializers.IntegerField(required=False)


class CategorySerializer(serializers.ModelSerializer[Category]):
    class Meta:
        model = Category
        fields = ["key", "name", "description", "critical", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


# --- Preferences -------------------------------------------------------------------------------


class QuietHoursSerializer(serializers.Serializer[Any]):
    start = serializers.TimeField(help_text="Local time in the recipient's timezone, e.g. 22:00.")
    end = serializers.TimeField(help_text="Local time; may be earlier than start (wraps midnight). Equal: none.")


@extend_schema_field(
    {
        "type": "object",
        "properties": {channel: {"type": "boolean"} for channel in rendering.CHANNELS},
        "additionalProperties": False,
    }
)
class PreferenceChannelsField(serializers.DictField):
    """{channel: on/off}: only the channels there are (`preference_layer_errors` refuses any other key)."""


class PreferenceLayerSerializer(serializers.Serializer[Any]):
    category = serializers.SlugField(required=False, allow_null=True, default=None, help_text="Null: every category.")
    channels = PreferenceChannelsField(
        child=serializers.BooleanField(), required=False, default=dict, help_text="{channel: on/off}; unlisted inherit."
    )
    digest = serializers.ChoiceField(choices=[("", "inherit"), *Digest.choices], required=False, default="")
    quiet_hours = QuietHoursSerializer(required=False, allow_null=True, default=None)


class PreferencesSerializer(serializers.Serializer[Any]):
    preferences = PreferenceLayerSerializer(many=True)
    unsubscribed = serializers.BooleanField(required=False, help_text="Global unsubscribe (recipients only).")
    timezone = serializers.CharField(required=False, allow_blank=True, help_text="IANA zone; recipients only.")
    locale = serializers.CharField(required=False, allow_blank=True, help_text="BCP 47 tag; recipients only.")


class PreferenceCategorySerializer(serializers.Serializer[Any]):
    key = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField()
    critical = serializers.BooleanField(help_text="Shown locked on: its channels cannot be turned off.")


class PreferencesReadSerializer(PreferencesSerializer):
    categories = PreferenceCategorySerializer(many=True, read_only=True)
    channels = serializers.ListField(child=serializers.CharField(), read_only=True)
    effective = serializers.DictField(
        read_only=True, help_text="Merged result per category key ('*': a category with no rows of its own)."
    )


def layer_in(data: dict[str, Any]) -> dict[str, Any]:
    quiet = data.get("quiet_hours") or {}
    return {
        "category": data.get("category"),
        "channels": data.get("channels") or {},
        "digest": data.get("digest") or "",
        "quiet_hours_start": quiet.get("start"),
        "quiet_hours_end": quiet.get("end"),
    }


# --- Templates ---------------------------------------------------------------------------------


class TemplateVersionSerializer(serializers.ModelSerializer[TemplateVersion]):
    category = serializers.CharField(source="category_key", read_only=True)

    class Meta:
        model = TemplateVersion
        fields = [
            "version",
            "name",
            "description",
            "category",
            "variables",
            "default_channels",
            "content",
            "digest",
            "created_at",
            "created_by",
        ]
        read_only_fields = fields


class TemplateSerializer(serializers.ModelSerializer[Template]):
    category = serializers.CharField(source="category.key", read_only=True)
    version = serializers.IntegerField(source="current_version.version", default=None, read_only=True)
    description = serializers.CharField(source="current_version.description", default="", read_only=True)
    variables = serializers.JSONField(source="current_version.variables", default=None, read_only=True)
    default_channels = serializers.JSONField(source="current_version.default_channels", default=None, read_only=True)
    content = serializers.JSONField(source="current_version.content", default=dict, read_only=True)
    digest = serializers.JSONField(source="current_version.digest", default=None, read_only=True)
    archived = serializers.SerializerMethodField()

    class Meta:
        model = Template
        fields = [
            "key",
            "name",
            "description",
            "category",
            "version",
            "variables",
            "default_channels",
            "content",
            "digest",
            "archived",
            "archived_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_archived(self, obj: Template) -> bool:
        return obj.archived_at is not None


class TemplateWriteSerializer(serializers.Serializer[Any]):
    """The versioned definition. Content is validated by the service (parse, declared variables)."""

    key = serializers.SlugField(max_length=100, required=False, help_text="Required on create; cannot change.")
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    category = serializers.SlugField(max_length=64, required=False, help_text="Created on first use.")
    variables = serializers.ListField(
        child=serializers.JSONField(), required=False, help_text='Names, or {"name", "required", "example"}.'
    )
    default_channels = serializers.ListField(child=channel_field(), required=False)
    content = serializers.DictField(
        required=False, help_text="{locale: {channel: {field: jinja source}}} with a `default` locale."
    )
    digest = NullableDigestRuleField(
        required=False,
        allow_null=True,
        help_text='Digest rule {"key": jinja source over declared variables, "window_minutes": n}; null: none.',
    )


class TemplatePreviewSerializer(serializers.Serializer[Any]):
    data = serializers.DictField(  # type: ignore[assignment]  # a field named like Serializer.data
        required=False, default=dict, help_text="Variables; missing ones use examples."
    )
    version = serializers.IntegerField(required=False, min_value=1, help_text="Default: the current version.")


@extend_schema_field(OpenApiTypes.OBJECT)
class _Rendered(serializers.DictField):
    pass


class TemplatePreviewResultSerializer(serializers.Serializer[Any]):
    version = serializers.IntegerField()
    rendered = _Rendered(help_text="{locale: {channel: {field: text} or {error}}}")


# --- Inbox -------------------------------------------------------------------------------------


class InboxItemSerializer(serializers.ModelSerializer[Delivery]):
    notification = serializers.UUIDField(source="notification_id", read_only=True)
    title = serializers.SerializerMethodField()
    body = serializers.SerializerMethodField()
    action_url = serializers.SerializerMethodField()
    data = serializers.SerializerMethodField()  # type: ignore[assignment]  # a field named like Serializer.data
    locale = serializers.SerializerMethodField()
    read = serializers.SerializerMethodField()

    class Meta:
        model = Delivery
        fields = [
            "id",
            "notification",
            "title",
            "body",
            "action_url",
            "data",
            "locale",
            "read",
            "created_at",
            "seen_at",
            "read_at",
            "archived_at",
        ]
        read_only_fields = fields

    def _content(self, obj: Delivery) -> dict[str, Any]:
        return (obj.rendered or {}).get("content") or {}

    def get_title(self, obj: Delivery) -> str:
        return str(self._content(obj).get("title", ""))

    def get_body(self, obj: Delivery) -> str:
        return str(self._content(obj).get("body", ""))

    def get_action_url(self, obj: Delivery) -> str:
        return str(self._content(obj).get("action_url", ""))

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_data(self, obj: Delivery) -> dict[str, Any]:
        return dict(self._content(obj).get("data") or {})

    def get_locale(self, obj: Delivery) -> str:
        return str((obj.rendered or {}).get("locale", ""))

    def get_read(self, obj: Delivery) -> bool:
        return obj.read_at is not None


class InboxCountsSerializer(serializers.Serializer[Any]):
    unread = serializers.IntegerField()
    unseen = serializers.IntegerField()


class InboxChangedSerializer(serializers.Serializer[Any]):
    updated = serializers.IntegerField()


class InboxTokenRequestSerializer(serializers.Serializer[Any]):
    ttl_seconds = serializers.IntegerField(required=False, min_value=60, help_text="Default 3600; at most 86400.")


class InboxTokenSerializer(serializers.Serializer[Any]):
    token = serializers.CharField(help_text="Send as `Authorization: Recipient <token>` (or `?token=`).")
    expires_at = serializers.DateTimeField()
    recipient = serializers.CharField()


# --- Dead letters (docs/reliability.md) ----------------------------------------------------------


class DeliveryReplayFilterSerializer(serializers.Serializer[Any]):
    status = serializers.ListField(
        child=serializers.ChoiceField(choices=["failed", "dead"]), required=False, allow_empty=False
    )
    channel = serializers.ListField(
        child=serializers.ChoiceField(choices=[c for c, _ in CHANNEL_CHOICES]), required=False, allow_empty=False
    )
    notification = serializers.UUIDField(required=False)
    error_code = serializers.CharField(required=False, max_length=64)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)


class DeliveryReplaySerializer(serializers.Serializer[Any]):
    ids = serializers.ListField(
        child=serializers.UUIDField(), required=False, allow_empty=False, max_length=1000, help_text="At most 1000."
    )
    filter = DeliveryReplayFilterSerializer(required=False, help_text="Failed and dead deliveries matching this.")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=1000)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("ids" in attrs) == ("filter" in attrs):
            # Both fields are optional in the schema, which cannot say "exactly one": a rule, so 422.
            raise Unprocessable(
                "Give `ids` or a `filter` (one of them).",
                code="validation_error",
                fields={"non_field_errors": ["Give `ids` or a `filter` (one of them)."]},
            )
        return attrs


class DeliveryReplayResultSerializer(serializers.Serializer[Any]):
    matched = serializers.IntegerField(help_text="Failed or dead deliveries selected.")
    replayed = serializers.IntegerField(help_text="Replayed by this call (a concurrent replay may have taken some).")
