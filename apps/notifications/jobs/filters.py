"""The delivery filter the built-in export and resend tasks share (status, channel, notification, time)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from apps.notifications import selectors
from apps.notifications.models import CHANNEL_CHOICES, Delivery, Notification


def _channel_choices() -> list[tuple[str, str]]:
    return list(CHANNEL_CHOICES)


def _status_choices() -> list[tuple[str, str]]:
    return list(Delivery.Status.choices)


class DeliveryFilterInput(serializers.Serializer[Any]):
    status = serializers.ListField(
        child=serializers.ChoiceField(choices=[]), required=False, allow_empty=False, help_text="Delivery statuses."
    )
    channel = serializers.ListField(
        child=serializers.ChoiceField(choices=[]), required=False, allow_empty=False, help_text="Channels."
    )
    notification = serializers.UUIDField(required=False, help_text="Only this notification's deliveries.")
    created_after = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601).")
    created_before = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601).")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set per instance, so a subclass can narrow the statuses (`ResendInput`).
        self.fields["status"].child.choices = self.status_choices()  # type: ignore[attr-defined]
        self.fields["channel"].child.choices = _channel_choices()  # type: ignore[attr-defined]

    def status_choices(self) -> list[tuple[str, str]]:
        return _status_choices()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        after, before = attrs.get("created_after"), attrs.get("created_before")
        if after and before and after >= before:
            raise serializers.ValidationError({"created_before": ["Must be later than created_after."]})
        notification = attrs.get("notification")
        tenant = self.context.get("tenant")
        if (
            notification
            and tenant is not None
            and not Notification.objects.filter(tenant=tenant, pk=notification).exists()
        ):
            raise serializers.ValidationError({"notification": ["No such notification."]})
        return attrs


def deliveries_matching(*, tenant_id: Any, data: dict[str, Any]) -> QuerySet[Any]:
    """The tenant's deliveries matching a stored (JSON) filter, oldest first."""
    return selectors.deliveries_filtered(
        tenant_id=tenant_id,
        status=data.get("status"),
        channel=data.get("channel"),
        notification=data.get("notification"),
        created_after=parse_datetime(data["created_after"]) if data.get("created_after") else None,
        created_before=parse_datetime(data["created_before"]) if data.get("created_before") else None,
    )
