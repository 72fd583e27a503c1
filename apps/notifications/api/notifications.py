"""`/api/v1/notifications/`: send, list, cancel and reschedule notifications."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.filters import IsoDateTimeFilter
from apps.core.idempotency import accepts_idempotency_key, idempotent
from apps.core.schema import ERROR_RESPONSES, ErrorSerializer
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications import selectors, serializers
from apps.notifications.api.common import UUID_PATTERN, WRITE
from apps.notifications.models import Notification
from apps.notifications.services.notifications import notification_cancel, notification_create
from apps.notifications.services.scheduling import notification_reschedule
from apps.tenancy.actors import actor_from_request


class NotificationFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Notification.Status.choices)
    template = django_filters.CharFilter(field_name="template__key", help_text="Template key.")
    priority = django_filters.ChoiceFilter(choices=Notification.Priority.choices)
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Notification
        fields = ["status", "template", "priority", "created_after", "created_before"]


NOTIFICATION_EXAMPLES = [
    OpenApiExample(
        "A template to two recipients",
        request_only=True,
        value={
            "template": "order_shipped",
            "payload": {"order_id": "A-1001", "carrier": "UPS"},
            "recipients": ["user-42", {"external_id": "user-43", "email": "ana@example.com", "locale": "fr-CA"}],
            "channels": ["email", "in_app"],
            "priority": "normal",
        },
    ),
    OpenApiExample(
        "Inline content to a topic, deduplicated for an hour",
        request_only=True,
        value={
            "content": {"in_app": {"title": "Maintenance at {{ time }}", "body": "Expect a short outage."}},
            "category": "announcements",
            "payload": {"time": "22:00 UTC"},
            "topic": "beta-testers",
            "priority": "bulk",
            "dedup_key": "maintenance-2030-01-01",
            "dedup_window_seconds": 3600,
        },
    ),
    OpenApiExample(
        "Accepted",
        response_only=True,
        status_codes=["202"],
        value={
            "id": "01900000-0000-7000-8000-000000000000",
            "status": "accepted",
            "url": "/api/v1/notifications/01900000-0000-7000-8000-000000000000/",
        },
    ),
    OpenApiExample(
        "Refused: no such template",
        response_only=True,
        status_codes=["400"],
        value={
            "code": "validation_error",
            "message": "The notification is invalid; nothing was sent. See fields.",
            "fields": {"template": ["No template 'order_shiped'."]},
        },
    ),
    OpenApiExample(
        "Refused: the Idempotency-Key was used for another notification",
        response_only=True,
        status_codes=["422"],
        value={
            "code": "idempotency_key_reused",
            "message": "This idempotency key was used for a different notification.",
            "fields": {},
        },
    ),
]


@extend_schema_view(
    list=extend_schema(
        summary="List notifications with per-channel delivery counts",
        responses={200: serializers.NotificationSerializer(many=True)},
    ),
    retrieve=extend_schema(
        summary="A notification, its status and per-channel counts",
        responses={200: serializers.NotificationSerializer},
    ),
)
class NotificationViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Notification]
):
    queryset = Notification.objects.select_related("template", "template_version", "category", "topic")
    serializer_class = serializers.NotificationSerializer
    filterset_class = NotificationFilter
    write_scope = WRITE
    lookup_value_regex = UUID_PATTERN

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        items = list(page if page is not None else self.filter_queryset(self.get_queryset()))
        context = {**self.get_serializer_context(), "counts": selectors.notification_counts([n.pk for n in items])}
        data = serializers.NotificationSerializer(items, many=True, context=context).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    @extend_schema(
        summary="Send a notification",
        description=(
            "Records the intent and answers 202 at once; fan-out and sends run on the priority queue. "
            "Everything is validated first (template, declared variables, channels, recipients, topic): "
            "a 400 changes nothing. Repeat with the same `Idempotency-Key` and body to get the same "
            "notification; a different body with that key answers 422."
        ),
        request=serializers.NotificationCreateSerializer,
        responses={
            202: serializers.NotificationAcceptedSerializer,
            422: OpenApiResponse(ErrorSerializer, description="Idempotency-Key reused with a different body."),
            400: ERROR_RESPONSES[400],
        },
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
        examples=NOTIFICATION_EXAMPLES,
    )
    @accepts_idempotency_key("notifications.create")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        tenant = request_tenant(request)

        def run() -> tuple[Response, str]:
            notification = notification_create(
                tenant=tenant,
                idempotency_key=request.headers.get("Idempotency-Key", "").strip(),
                **serializers.notification_create_data(request.data),
            )
            url = serializers.notification_url(notification)
            data = {"id": str(notification.pk), "status": notification.status, "url": url}
            return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": url}), str(notification.pk)

        response = idempotent(request, scope="notifications.create", create=run)
        if response.status_code == status.HTTP_202_ACCEPTED and "Location" not in response:
            response["Location"] = response.data["url"]
        return response

    @extend_schema(
        summary="Cancel a notification",
        description="Stops everything not yet sent: a scheduled or not yet fanned-out intent, and every "
        "pending, queued, deferred or digest-waiting delivery. Deliveries being sent finish.",
        request=None,
        responses={
            200: serializers.CancelResultSerializer,
            409: OpenApiResponse(description="Already finished."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        notification, cancelled = notification_cancel(notification=self.get_object(), actor=actor_from_request(request))
        data = serializers.NotificationSerializer(notification, context=self.get_serializer_context()).data
        return Response({"notification": data, "deliveries_cancelled": cancelled})

    @extend_schema(
        summary="Reschedule a scheduled notification",
        description="Moves a notification still `scheduled` to another time; nothing is sent before it. "
        "A past time sends it at the next dispatcher run (within seconds). Once the dispatcher took it "
        "(or it was cancelled) the answer is 409 `not_reschedulable`.",
        request=serializers.RescheduleSerializer,
        responses={
            200: serializers.NotificationSerializer,
            409: OpenApiResponse(description="Not scheduled any more."),
        },
    )
    @action(detail=True, methods=["post", "patch"])
    def reschedule(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.RescheduleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        notification = notification_reschedule(
            notification=self.get_object(),
            scheduled_at=body.validated_data["scheduled_at"],
            actor=actor_from_request(request),
        )
        return Response(serializers.NotificationSerializer(notification, context=self.get_serializer_context()).data)
