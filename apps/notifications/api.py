"""The notifications API under /api/v1/: notifications, deliveries, recipients (devices, preferences,
inbox tokens), topics, categories, templates (versions, archive, preview) and the in-app inbox.

Views stay thin: they parse, call a service or a selector, and shape the answer. Writes need the
`notifications:write` scope; reads need `read`. The inbox also accepts a recipient token.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db import IntegrityError, transaction
from django.db.models import Count, F, ProtectedError, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer
from rest_framework.views import APIView

from apps.core.errors import ApplicationError, Conflict, NotFound
from apps.core.filters import IsoDateTimeFilter
from apps.core.idempotency import accepts_idempotency_key, idempotent, idempotent_create
from apps.core.schema import ERROR_RESPONSES, ErrorSerializer
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications import selectors, serializers
from apps.notifications.authentication import RecipientToken, RecipientTokenAuthentication, recipient_of
from apps.notifications.models import Category, Delivery, Device, Notification, Preference, Recipient, Template, Topic
from apps.notifications.services import inbox as inbox_services
from apps.notifications.services import preferences as preference_services
from apps.notifications.services import recipients as recipient_services
from apps.notifications.services import replay as replay_services
from apps.notifications.services import templates as template_services
from apps.notifications.services.notifications import notification_cancel, notification_create
from apps.notifications.services.scheduling import notification_reschedule
from apps.observability.audit import audit_record
from apps.tenancy.actors import actor_from_request
from apps.tenancy.authentication import ApiKeyAuthentication
from apps.tenancy.models import Scope
from apps.tenancy.permissions import HasTenant

WRITE = Scope.NOTIFICATIONS_WRITE
UUID_PATTERN = r"[0-9a-fA-F-]{32,36}"
EXTERNAL_ID_PATTERN = r"[^/]+"
# Preference layers listed general first: the all-categories layer, then by category key.
LAYER_ORDER = F("category__key").asc(nulls_first=True)


# --- Notifications -----------------------------------------------------------------------------


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
        responses={200: serializers.NotificationSerializer(many=True), **ERROR_RESPONSES},
    ),
    retrieve=extend_schema(
        summary="A notification, its status and per-channel counts",
        responses={200: serializers.NotificationSerializer, **ERROR_RESPONSES},
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
            **ERROR_RESPONSES,
        },
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
        examples=NOTIFICATION_EXAMPLES,
    )
    @accepts_idempotency_key("notifications.create")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        tenant = request_tenant(request)

        def run() -> tuple[Response, str]:
            body = serializers.NotificationCreateSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            notification = notification_create(
                tenant=tenant,
                idempotency_key=request.headers.get("Idempotency-Key", "").strip(),
                **body.validated_data,
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
            **ERROR_RESPONSES,
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
            **ERROR_RESPONSES,
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


# --- Deliveries --------------------------------------------------------------------------------


class DeliveryFilter(django_filters.FilterSet):
    notification = django_filters.UUIDFilter(field_name="notification_id")
    recipient = django_filters.CharFilter(field_name="recipient__external_id", help_text="Recipient external_id.")
    channel = django_filters.ChoiceFilter(
        choices=[(c, c) for c in ("email", "sms", "push", "in_app", "chat", "webhook")]
    )
    status = django_filters.MultipleChoiceFilter(choices=Delivery.Status.choices)
    error_code = django_filters.CharFilter(field_name="error_code", help_text="e.g. http_503, lease_expired.")
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Delivery
        fields = ["notification", "recipient", "channel", "status", "error_code", "created_after", "created_before"]


@extend_schema_view(
    list=extend_schema(
        summary="List deliveries", responses={200: serializers.DeliverySerializer(many=True), **ERROR_RESPONSES}
    ),
    retrieve=extend_schema(
        summary="A delivery with what was sent and every attempt",
        responses={200: serializers.DeliveryDetailSerializer, **ERROR_RESPONSES},
    ),
)
class DeliveryViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Delivery]
):
    queryset = Delivery.objects.select_related("recipient", "template_version").order_by("-created_at", "-id")
    serializer_class = serializers.DeliverySerializer
    filterset_class = DeliveryFilter
    write_scope = WRITE
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self) -> Any:
        qs = super().get_queryset()
        if self.action == "retrieve":
            qs = qs.prefetch_related("attempts_log")
        return qs

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        return serializers.DeliveryDetailSerializer if self.action == "retrieve" else serializers.DeliverySerializer

    @extend_schema(
        summary="Replay a failed or dead delivery",
        description="Moves it back to `pending` with a fresh retry budget (its attempts stay in the log); the "
        "dispatcher sends it within seconds, once, even if replayed twice at the same moment: the second "
        "call answers 409 `not_replayable`. See docs/reliability.md.",
        request=None,
        responses={
            202: serializers.DeliveryDetailSerializer,
            409: OpenApiResponse(description="Not failed or dead (e.g. already replayed)."),
            **ERROR_RESPONSES,
        },
    )
    @action(detail=True, methods=["post"])
    @idempotent_create("deliveries.replay")
    def replay(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        delivery = replay_services.delivery_replay(
            tenant=request_tenant(request), delivery_id=self.get_object().pk, actor=actor_from_request(request)
        )
        data = serializers.DeliveryDetailSerializer(self.get_queryset().get(pk=delivery.pk)).data
        return Response(data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        operation_id="deliveries_replay_bulk",
        summary="Replay failed or dead deliveries in bulk",
        description="By `ids`, or every failed or dead delivery matching `filter` (status, channel, notification, "
        "error_code, created_after, created_before), at most 1000 per call (oldest first; call again for more, "
        "or start the `signalbox.notifications.resend_deliveries` task for large sets).",
        request=serializers.DeliveryReplaySerializer,
        responses={202: serializers.DeliveryReplayResultSerializer, **ERROR_RESPONSES},
    )
    @action(detail=False, methods=["post"], url_path="replay")
    @idempotent_create("deliveries.replay_bulk")
    def replay_bulk(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.DeliveryReplaySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = replay_services.deliveries_replay_bulk(
            tenant=request_tenant(request),
            ids=body.validated_data.get("ids"),
            filters=body.validated_data.get("filter"),
            limit=body.validated_data["limit"],
            actor=actor_from_request(request),
        )
        return Response({"matched": result.matched, "replayed": result.replayed}, status=status.HTTP_202_ACCEPTED)


# --- Recipients ----------------------------------------------------------------------------------


class InboxAccess(BasePermission):
    """A recipient token, or an API key with `read` (GET) / `notifications:write` (POST)."""

    message = "Authenticate with a recipient token or an API key."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, RecipientToken):
            return True
        checker = HasTenant()
        allowed = checker.has_permission(request, view)
        if not allowed:
            self.message, self.code = checker.message, getattr(checker, "code", None)  # type: ignore[assignment]
        return allowed


class RecipientFilter(django_filters.FilterSet):
    email = django_filters.CharFilter(field_name="email", lookup_expr="iexact")
    topic = django_filters.CharFilter(field_name="topic_memberships__topic__key", help_text="Subscribers of a topic.")

    class Meta:
        model = Recipient
        fields = ["email", "topic"]


PUT_DEFAULTS = {
    "name": "",
    "email": "",
    "phone": "",
    "locale": "",
    "timezone": "",
    "chat_address": "",
    "webhook_url": "",
    "data": {},
    "unsubscribed": False,
}


def _recipient_body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ApplicationError(
            "Send a JSON object.", code="validation_error", fields={"non_field_errors": ["Expected an object."]}
        )
    return dict(request.data)


RECIPIENT_EXAMPLES = [
    OpenApiExample(
        "A recipient with an email address, a locale and a time zone",
        request_only=True,
        value={
            "external_id": "user-42",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "locale": "en-GB",
            "timezone": "Europe/London",
            "data": {"plan": "pro"},
        },
    ),
    OpenApiExample(
        "Created",
        response_only=True,
        status_codes=["201"],
        value={
            "external_id": "user-42",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "",
            "locale": "en-GB",
            "timezone": "Europe/London",
            "chat_address": "",
            "webhook_url": "",
            "data": {"plan": "pro"},
            "unsubscribed": False,
            "unsubscribed_at": None,
            "has_webhook_secret": False,
            "created_at": "2030-01-01T09:00:00Z",
            "updated_at": "2030-01-01T09:00:00Z",
        },
    ),
    OpenApiExample(
        "Refused: invalid attributes",
        response_only=True,
        status_codes=["400"],
        value={
            "code": "validation_error",
            "message": "The recipient is invalid; see fields.",
            "fields": {
                "external_id": ["1-255 characters, without spaces, '/', '?' or '#'."],
                "email": ["Enter a valid email address."],
            },
        },
    ),
    OpenApiExample(
        "Refused: the external_id is taken",
        response_only=True,
        status_codes=["409"],
        value={
            "code": "recipient_exists",
            "message": "A recipient with this external_id exists; update it instead.",
            "fields": {"external_id": ["Already exists."]},
        },
    ),
]


@extend_schema_view(
    list=extend_schema(
        summary="List recipients", responses={200: serializers.RecipientSerializer(many=True), **ERROR_RESPONSES}
    ),
    retrieve=extend_schema(
        summary="A recipient by external_id", responses={200: serializers.RecipientSerializer, **ERROR_RESPONSES}
    ),
    create=extend_schema(
        summary="Create a recipient",
        description="Only `external_id` is required. To create or update many at once, use "
        "`POST /api/v1/recipients/bulk/`.",
        responses={
            201: serializers.RecipientSerializer,
            409: OpenApiResponse(ErrorSerializer, description="A recipient with this external_id exists."),
            **ERROR_RESPONSES,
        },
        examples=RECIPIENT_EXAMPLES,
    ),
    update=extend_schema(
        summary="Replace a recipient's attributes", responses={200: serializers.RecipientSerializer, **ERROR_RESPONSES}
    ),
    partial_update=extend_schema(
        summary="Change some attributes", responses={200: serializers.RecipientSerializer, **ERROR_RESPONSES}
    ),
    destroy=extend_schema(summary="Delete a recipient and their deliveries", responses={204: None, **ERROR_RESPONSES}),
)
class RecipientViewSet(TenantScopedMixin, viewsets.ModelViewSet[Recipient]):
    queryset = Recipient.objects.all().order_by("external_id")
    serializer_class = serializers.RecipientSerializer
    filterset_class = RecipientFilter
    lookup_field = "external_id"
    lookup_value_regex = EXTERNAL_ID_PATTERN
    write_scope = WRITE

    @idempotent_create("recipients.create")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        recipient = recipient_services.recipient_create(tenant=request_tenant(request), data=_recipient_body(request))
        return Response(serializers.RecipientSerializer(recipient).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = _recipient_body(request)
        if not kwargs.get("partial"):
            body = {**PUT_DEFAULTS, **body}
        recipient = recipient_services.recipient_update(recipient=self.get_object(), data=body)
        return Response(serializers.RecipientSerializer(recipient).data)

    def perform_destroy(self, instance: Recipient) -> None:
        audit_record(
            action="recipient.deleted",
            tenant=request_tenant(self.request),
            actor=actor_from_request(self.request),
            target=instance,
        )
        instance.delete()

    @extend_schema(
        summary="Create or update many recipients",
        description="Upserts by external_id (up to 10,000 per call) with one INSERT … ON CONFLICT per field set. "
        "Fields an item leaves out keep their stored value. One invalid item refuses the whole call.",
        request=serializers.RecipientBulkSerializer,
        responses={200: serializers.RecipientBulkResultSerializer, **ERROR_RESPONSES},
        examples=[
            OpenApiExample(
                "Two recipients",
                request_only=True,
                value={
                    "recipients": [
                        {
                            "external_id": "user-1",
                            "email": "a@example.com",
                            "locale": "fr-CA",
                            "timezone": "America/Toronto",
                        },
                        {"external_id": "user-2", "phone": "+14155550100", "data": {"plan": "pro"}},
                    ]
                },
            )
        ],
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        items = request.data.get("recipients") if isinstance(request.data, dict) else None
        if not isinstance(items, list) or not items:
            raise ApplicationError(
                'Send {"recipients": [...]}.', code="validation_error", fields={"recipients": ["A non-empty list."]}
            )
        return Response(recipient_services.recipients_upsert(tenant=request_tenant(request), items=items))

    @extend_schema(
        methods=["GET"],
        summary="A recipient's preferences, as stored and as merged",
        responses={200: serializers.PreferencesReadSerializer, **ERROR_RESPONSES},
    )
    @extend_schema(
        methods=["PUT"],
        summary="Replace a recipient's preferences",
        request=serializers.PreferencesSerializer,
        responses={200: serializers.PreferencesReadSerializer, **ERROR_RESPONSES},
        examples=[
            OpenApiExample(
                "No marketing email, quiet nights, a daily digest for orders",
                request_only=True,
                value={
                    "preferences": [
                        {"category": None, "quiet_hours": {"start": "22:00", "end": "07:00"}},
                        {"category": "marketing", "channels": {"email": False}},
                        {"category": "orders", "digest": "daily"},
                    ],
                    "unsubscribed": False,
                },
            )
        ],
    )
    @action(
        detail=True,
        methods=["get", "put"],
        authentication_classes=[RecipientTokenAuthentication, ApiKeyAuthentication],
        permission_classes=[InboxAccess],
    )
    def preferences(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        recipient = self.get_object()
        holder = recipient_of(request)
        if holder is not None and holder.pk != recipient.pk:
            # Another recipient of the same tenant: as absent as another tenant's would be.
            raise NotFound("No such recipient.")
        tenant = request_tenant(request)
        if request.method == "PUT":
            body = serializers.PreferencesSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            recipient = preference_services.preference_centre_save(
                tenant=tenant,
                recipient=recipient,
                layers=[serializers.layer_in(layer) for layer in body.validated_data["preferences"]],
                profile=body.validated_data,
            )
        return Response(preference_services.preference_centre(tenant=tenant, recipient=recipient))

    @extend_schema(
        summary="Mint a recipient token for the in-app inbox",
        description="Hand the token to this recipient's browser or app: it opens their inbox "
        "(`Authorization: Recipient <token>`, or `?token=`) and nothing else. Signed, expiring. It stops "
        "working at once when the API key that minted it is revoked or expires, or when the recipient's "
        "tokens are revoked (`POST …/inbox-tokens/revoke/`).",
        request=serializers.InboxTokenRequestSerializer,
        responses={201: serializers.InboxTokenSerializer, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post"], url_path="inbox-token")
    @idempotent_create("recipients.inbox_token", sealed=True)
    def inbox_token(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        recipient = self.get_object()
        body = serializers.InboxTokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        token, expires_at = inbox_services.inbox_token_mint(
            recipient=recipient,
            key_prefix=str(getattr(request.auth, "prefix", "")),
            ttl_seconds=body.validated_data.get("ttl_seconds"),
        )
        return Response(
            {"token": token, "expires_at": expires_at, "recipient": recipient.external_id},
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        summary="Revoke every inbox token of a recipient",
        description="Every token minted for this recipient so far stops working at once (a signed-out or "
        "compromised browser); tokens minted afterwards work. Audited (`recipient.inbox_tokens_revoked`).",
        request=None,
        responses={204: None, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post"], url_path="inbox-tokens/revoke")
    def inbox_tokens_revoke(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        inbox_services.inbox_tokens_revoke(recipient=self.get_object(), actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Give the recipient a webhook signing secret of its own",
        description="POST makes a new `whsec_` secret (replacing any earlier one) and shows it once: "
        "this recipient's webhooks are then signed with it instead of the provider's shared secret. "
        "DELETE goes back to the shared secret. Audited.",
        request=None,
        responses={201: serializers.WebhookSecretSerializer, 204: None, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post", "delete"], url_path="webhook-secret")
    @idempotent_create("recipients.webhook_secret", sealed=True)
    def webhook_secret(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        recipient = self.get_object()
        if request.method == "DELETE":
            recipient_services.recipient_webhook_secret_clear(recipient=recipient, actor=actor_from_request(request))
            return Response(status=status.HTTP_204_NO_CONTENT)
        secret = recipient_services.recipient_webhook_secret_set(recipient=recipient, actor=actor_from_request(request))
        return Response({"recipient": recipient.external_id, "secret": secret}, status=status.HTTP_201_CREATED)


class DeviceViewSet(
    mixins.ListModelMixin, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet[Device]
):
    """Push tokens of one recipient: `recipients/<external_id>/devices/`."""

    serializer_class = serializers.DeviceSerializer
    write_scope = WRITE
    queryset = Device.objects.none()

    def recipient(self) -> Recipient:
        return get_object_or_404(Recipient, tenant=request_tenant(self.request), external_id=self.kwargs["external_id"])

    def get_queryset(self) -> QuerySet[Device]:
        return Device.objects.filter(tenant=request_tenant(self.request), recipient=self.recipient())

    @extend_schema(summary="Register a push token", responses={201: serializers.DeviceSerializer, **ERROR_RESPONSES})
    @idempotent_create("recipients.devices.create")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.DeviceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        device = recipient_services.device_register(
            recipient=self.recipient(), platform=body.validated_data["platform"], token=body.validated_data["token"]
        )
        return Response(serializers.DeviceSerializer(device).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Unregister a push token (it is deactivated)", responses={204: None, **ERROR_RESPONSES})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        recipient_services.device_deactivate(device=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Topics and categories -----------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List topics"),
    create=extend_schema(summary="Create a topic"),
    retrieve=extend_schema(summary="A topic and its subscriber count"),
    destroy=extend_schema(summary="Delete a topic (its memberships go with it)"),
)
class TopicViewSet(TenantScopedMixin, viewsets.ModelViewSet[Topic]):
    queryset = Topic.objects.annotate(subscribers=Count("memberships")).order_by("key")
    serializer_class = serializers.TopicSerializer
    lookup_field = "key"
    write_scope = WRITE
    create = idempotent_create("topics.create")(viewsets.ModelViewSet.create)

    def perform_create(self, serializer: Any) -> None:
        tenant = request_tenant(self.request)
        if Topic.objects.filter(tenant=tenant, key=serializer.validated_data["key"]).exists():
            raise Conflict("A topic with this key exists.", code="topic_exists", fields={"key": ["Already exists."]})
        try:
            with transaction.atomic():
                serializer.save(tenant=tenant)
        except IntegrityError as exc:  # a concurrent create of the same key won between check and save
            raise Conflict(
                "A topic with this key exists.", code="topic_exists", fields={"key": ["Already exists."]}
            ) from exc

    def perform_update(self, serializer: Any) -> None:
        if serializer.validated_data.get("key", serializer.instance.key) != serializer.instance.key:
            raise ApplicationError(
                "The key of a topic cannot change.", code="validation_error", fields={"key": ["Immutable."]}
            )
        serializer.save()

    @extend_schema(
        methods=["GET"],
        summary="A topic's subscribers",
        responses={200: serializers.RecipientSerializer(many=True), **ERROR_RESPONSES},
    )
    @extend_schema(
        methods=["POST"],
        summary="Subscribe recipients (by external_id, up to 10,000 per call)",
        request=serializers.SubscribersSerializer,
        responses={200: serializers.SubscribersResultSerializer, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["get", "post"])
    def subscribers(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        topic = self.get_object()
        if request.method == "POST":
            body = serializers.SubscribersSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            added = recipient_services.topic_subscribe(topic=topic, external_ids=body.validated_data["recipients"])
            return Response({"added": added})
        qs = Recipient.objects.filter(topic_memberships__topic=topic).order_by("external_id")
        page = self.paginate_queryset(qs)  # type: ignore[arg-type]  # a list of another model
        data = serializers.RecipientSerializer(page if page is not None else qs, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    @extend_schema(
        summary="Unsubscribe recipients from the topic",
        request=serializers.SubscribersSerializer,
        responses={200: serializers.SubscribersResultSerializer, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post"], url_path="subscribers/remove")
    def remove_subscribers(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.SubscribersSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        removed = recipient_services.topic_unsubscribe(
            topic=self.get_object(), external_ids=body.validated_data["recipients"]
        )
        return Response({"removed": removed})


class CategoryViewSet(TenantScopedMixin, viewsets.ModelViewSet[Category]):
    """Categories group templates for preferences; a critical one cannot be opted out of."""

    queryset = Category.objects.all().order_by("key")
    serializer_class = serializers.CategorySerializer
    lookup_field = "key"
    write_scope = WRITE
    create = idempotent_create("categories.create")(viewsets.ModelViewSet.create)

    def perform_create(self, serializer: Any) -> None:
        tenant = request_tenant(self.request)
        if Category.objects.filter(tenant=tenant, key=serializer.validated_data["key"]).exists():
            raise Conflict(
                "A category with this key exists.", code="category_exists", fields={"key": ["Already exists."]}
            )
        try:
            with transaction.atomic():
                category = serializer.save(tenant=tenant)
        except IntegrityError as exc:  # a concurrent create of the same key won between check and save
            raise Conflict(
                "A category with this key exists.", code="category_exists", fields={"key": ["Already exists."]}
            ) from exc
        audit_record(
            action="category.created",
            tenant=tenant,
            actor=actor_from_request(self.request),
            target=category,
            data={"critical": category.critical},
        )

    def perform_update(self, serializer: Any) -> None:
        if serializer.validated_data.get("key", serializer.instance.key) != serializer.instance.key:
            raise ApplicationError(
                "The key of a category cannot change.", code="validation_error", fields={"key": ["Immutable."]}
            )
        category = serializer.save()
        audit_record(
            action="category.updated",
            tenant=request_tenant(self.request),
            actor=actor_from_request(self.request),
            target=category,
            data={"critical": category.critical},
        )

    def perform_destroy(self, instance: Category) -> None:
        try:
            template_services.category_delete(category=instance)
        except ProtectedError as exc:
            raise Conflict("Notifications refer to this category.", code="category_in_use") from exc


class DefaultPreferencesView(APIView):
    """The tenant's default preferences: the layers every recipient inherits from."""

    write_scope = WRITE

    @extend_schema(
        summary="The tenant's default preferences",
        responses={200: serializers.PreferencesSerializer, **ERROR_RESPONSES},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rows = (
            Preference.objects.filter(tenant=request_tenant(request), recipient__isnull=True)
            .select_related("category")
            .order_by(LAYER_ORDER)
        )
        return Response({"preferences": [preference_services.layer_out(row) for row in rows]})

    @extend_schema(
        summary="Replace the tenant's default preferences",
        request=serializers.PreferencesSerializer,
        responses={200: serializers.PreferencesSerializer, **ERROR_RESPONSES},
        examples=[
            OpenApiExample(
                "Marketing off by SMS for everyone unless they opt in",
                request_only=True,
                value={"preferences": [{"category": "marketing", "channels": {"sms": False}}]},
            )
        ],
    )
    def put(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.PreferencesSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tenant = request_tenant(request)
        preference_services.preferences_replace(
            tenant=tenant,
            recipient=None,
            layers=[serializers.layer_in(layer) for layer in body.validated_data["preferences"]],
        )
        audit_record(action="preferences.defaults_replaced", tenant=tenant, actor=actor_from_request(request))
        return self.get(request)


# --- Templates -----------------------------------------------------------------------------------


TEMPLATE_EXAMPLE = OpenApiExample(
    "Order shipped, in English and French",
    request_only=True,
    value={
        "key": "order_shipped",
        "name": "Order shipped",
        "category": "orders",
        "variables": [
            {"name": "order_id", "example": "A-1001"},
            {"name": "carrier", "required": False, "example": "UPS"},
        ],
        "default_channels": ["email", "in_app"],
        "content": {
            "default": {
                "email": {
                    "subject": "Order {{ order_id }} shipped",
                    "text": "Hi {{ recipient.name }}, order {{ order_id }} is on its way.",
                    "html": "<p>Hi {{ recipient.name }}, order <b>{{ order_id }}</b> is on its way.</p>",
                },
                "in_app": {
                    "title": "Order {{ order_id }} shipped",
                    "body": "Track it in your account.",
                    "action_url": "/orders/{{ order_id }}",
                },
            },
            "fr": {
                "email": {
                    "subject": "Commande {{ order_id }} expédiée",
                    "text": "Votre commande {{ order_id }} est en route.",
                }
            },
        },
    },
)


class TemplateFilter(django_filters.FilterSet):
    archived = django_filters.BooleanFilter(method="filter_archived", help_text="Default: only active templates.")
    category = django_filters.CharFilter(field_name="category__key")

    class Meta:
        model = Template
        fields = ["archived", "category"]

    def filter_archived(self, queryset: QuerySet[Template], name: str, value: bool) -> QuerySet[Template]:
        return queryset.filter(archived_at__isnull=not value)


@extend_schema_view(
    list=extend_schema(
        summary="List templates (active ones unless ?archived=true)",
        responses={200: serializers.TemplateSerializer(many=True), **ERROR_RESPONSES},
    ),
    retrieve=extend_schema(
        summary="A template with its current version",
        responses={200: serializers.TemplateSerializer, **ERROR_RESPONSES},
    ),
)
class TemplateViewSet(TenantScopedMixin, viewsets.ModelViewSet[Template]):
    queryset = Template.objects.select_related("current_version", "category").order_by("key")
    serializer_class = serializers.TemplateSerializer
    filterset_class = TemplateFilter
    lookup_field = "key"
    write_scope = WRITE

    def filter_queryset(self, queryset: Any) -> Any:
        queryset = super().filter_queryset(queryset)
        if self.action == "list" and "archived" not in self.request.query_params:
            queryset = queryset.filter(archived_at__isnull=True)
        return queryset

    @extend_schema(
        summary="Create a template (version 1)",
        description="Content that does not parse, or uses a variable not declared in `variables`, is refused "
        "with per-field errors. Templates see their variables and `recipient` (external_id, name, email, "
        "phone, locale, timezone, data).",
        request=serializers.TemplateWriteSerializer,
        responses={
            201: serializers.TemplateSerializer,
            409: OpenApiResponse(description="Key exists."),
            **ERROR_RESPONSES,
        },
        examples=[TEMPLATE_EXAMPLE],
    )
    @idempotent_create("templates.create")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.TemplateWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        key = data.pop("key", None)
        if not key:
            raise ApplicationError(
                "A key is required.", code="validation_error", fields={"key": ["This field is required."]}
            )
        if "content" not in data:
            raise ApplicationError(
                "Content is required.", code="validation_error", fields={"content": ["This field is required."]}
            )
        template = template_services.template_create(
            tenant=request_tenant(request), key=key, definition=data, actor=actor_from_request(request)
        )
        return Response(serializers.TemplateSerializer(template).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a template (adds a version)",
        description="Every change is a new immutable version; deliveries record the version they used. "
        "PUT and PATCH both keep fields you leave out; an unchanged definition adds no version.",
        request=serializers.TemplateWriteSerializer,
        responses={
            200: serializers.TemplateSerializer,
            409: OpenApiResponse(description="Archived."),
            **ERROR_RESPONSES,
        },
    )
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template = self.get_object()
        body = serializers.TemplateWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        changes = dict(body.validated_data)
        if changes.pop("key", template.key) != template.key:
            raise ApplicationError(
                "The key of a template cannot change.", code="validation_error", fields={"key": ["Immutable."]}
            )
        template, _ = template_services.template_update(
            template=template, changes=changes, actor=actor_from_request(request)
        )
        return Response(serializers.TemplateSerializer(self.get_queryset().get(pk=template.pk)).data)

    @extend_schema(
        summary="Change a template (adds a version)",
        request=serializers.TemplateWriteSerializer,
        responses={200: serializers.TemplateSerializer, **ERROR_RESPONSES},
    )
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, **kwargs)

    @extend_schema(
        summary="Archive a template (restorable; it can no longer be sent)", responses={204: None, **ERROR_RESPONSES}
    )
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template_services.template_archive(template=self.get_object(), actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Restore an archived template",
        request=None,
        responses={200: serializers.TemplateSerializer, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["post"])
    def restore(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template = template_services.template_restore(template=self.get_object(), actor=actor_from_request(request))
        return Response(serializers.TemplateSerializer(template).data)

    @extend_schema(
        summary="Every version of a template, newest first",
        responses={200: serializers.TemplateVersionSerializer(many=True), **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        qs = selectors.template_versions(template=self.get_object())
        page = self.paginate_queryset(qs)  # type: ignore[arg-type]  # a list of another model
        data = serializers.TemplateVersionSerializer(page if page is not None else qs, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    @extend_schema(
        summary="One version of a template", responses={200: serializers.TemplateVersionSerializer, **ERROR_RESPONSES}
    )
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]+)")
    def version(self, request: Request, number: str, *args: Any, **kwargs: Any) -> Response:
        version = selectors.template_versions(template=self.get_object()).filter(version=int(number)).first()
        if version is None:
            raise NotFound("No such version.", code="version_not_found")
        return Response(serializers.TemplateVersionSerializer(version).data)

    @extend_schema(
        summary="Render every locale and channel with sample data",
        description="Variables not in `data` use their declared `example` (or a placeholder); `recipient` is a sample.",
        request=serializers.TemplatePreviewSerializer,
        responses={200: serializers.TemplatePreviewResultSerializer, **ERROR_RESPONSES},
        examples=[OpenApiExample("Preview with an order id", request_only=True, value={"data": {"order_id": "B-7"}})],
    )
    @action(detail=True, methods=["post"])
    def preview(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        template = self.get_object()
        body = serializers.TemplatePreviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        version = template.current_version
        if body.validated_data.get("version"):
            version = (
                selectors.template_versions(template=template).filter(version=body.validated_data["version"]).first()
            )
            if version is None:
                raise NotFound("No such version.", code="version_not_found")
        rendered = template_services.template_preview(
            template=template, data=body.validated_data["data"], version=version
        )
        return Response({"version": version.version if version else None, "rendered": rendered})


# --- Inbox ---------------------------------------------------------------------------------------


INBOX_EXAMPLE_URL = "https://signalbox.example.com/api/v1/inbox/?recipient=user-42"


class InboxPagination(CursorPagination):
    """Newest first, stable while new items arrive (ids are time-ordered UUIDs)."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        # The schema's examples show inbox links rather than DRF's generic `api.example.org/accounts/`.
        paginated = super().get_paginated_response_schema(schema)
        for name, cursor in (("next", "cD0wMTkwMDAwMA%3D%3D"), ("previous", "cj0xJnA9MDE5MDAwMDA%3D")):
            paginated["properties"][name]["example"] = f"{INBOX_EXAMPLE_URL}&cursor={cursor}"
        return paginated


RECIPIENT_PARAM = OpenApiParameter(
    "recipient",
    {"type": "string", "minLength": 1},
    OpenApiParameter.QUERY,
    required=True,
    description="The recipient's external_id: required with an API key; a recipient token may name its own.",
)


INBOX_LIST_EXAMPLES = [
    OpenApiExample(
        "An unread item",
        response_only=True,
        status_codes=["200"],
        value={
            "id": "01900000-0000-7000-8000-00000000000a",
            "notification": "01900000-0000-7000-8000-000000000000",
            "title": "Order A-1001 shipped",
            "body": "Track it in your account.",
            "action_url": "/orders/A-1001",
            "data": {},
            "locale": "en",
            "read": False,
            "created_at": "2030-01-01T09:00:00Z",
            "seen_at": None,
            "read_at": None,
            "archived_at": None,
        },
    ),
    OpenApiExample(
        "Refused: an API key must name the recipient",
        response_only=True,
        status_codes=["400"],
        value={
            "code": "validation_error",
            "message": "Name the recipient (?recipient=<external_id>) when using an API key.",
            "fields": {"recipient": ["Required with an API key."]},
        },
    ),
]


@extend_schema(parameters=[RECIPIENT_PARAM])
class InboxViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Delivery]):
    """One recipient's in-app inbox, for their browser (recipient token) or the tenant's back end (API key)."""

    authentication_classes = [RecipientTokenAuthentication, ApiKeyAuthentication]
    permission_classes = [InboxAccess]
    serializer_class = serializers.InboxItemSerializer
    pagination_class = InboxPagination
    write_scope = WRITE
    lookup_value_regex = UUID_PATTERN
    queryset = Delivery.objects.none()

    _recipient: Recipient | None = None

    def recipient(self) -> Recipient:
        if self._recipient is not None:
            return self._recipient
        asked = self.request.query_params.get("recipient") or (
            self.request.data.get("recipient") if isinstance(self.request.data, dict) else None
        )
        holder = recipient_of(self.request)
        if holder is not None:
            if asked and asked != holder.external_id:
                raise PermissionDenied("This token opens another recipient's inbox.", code="recipient_mismatch")
            self._recipient = holder
        elif not asked:
            raise ApplicationError(
                "Name the recipient (?recipient=<external_id>) when using an API key.",
                code="validation_error",
                fields={"recipient": ["Required with an API key."]},
            )
        else:
            self._recipient = get_object_or_404(Recipient, tenant=request_tenant(self.request), external_id=asked)
        return self._recipient

    def get_queryset(self) -> QuerySet[Delivery]:
        qs = inbox_services.inbox_queryset(recipient=self.recipient())
        if self.action != "list":
            return qs
        params = self.request.query_params
        archived = params.get("archived", "false").lower()
        if archived in ("false", "0"):
            qs = qs.filter(archived_at__isnull=True)
        elif archived in ("true", "1"):
            qs = qs.filter(archived_at__isnull=False)
        state = params.get("status", "all")
        if state == "unread":
            qs = qs.filter(read_at__isnull=True)
        elif state == "read":
            qs = qs.filter(read_at__isnull=False)
        return qs

    @extend_schema(
        summary="List inbox items, newest first (cursor pagination)",
        description="`next` and `previous` are cursors: new items arriving while a client pages neither "
        "repeat nor skip an item. `?limit=` sets the page size (default 50, at most 200).",
        parameters=[
            OpenApiParameter("status", str, enum=["all", "unread", "read"], description="Default all."),
            OpenApiParameter("archived", str, enum=["false", "true", "all"], description="Default false."),
        ],
        responses={200: serializers.InboxItemSerializer(many=True), **ERROR_RESPONSES},
        examples=INBOX_LIST_EXAMPLES,
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(summary="One inbox item")
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    def _changed(self, updated: int) -> Response:
        return Response({"updated": updated})

    @extend_schema(summary="Unread and unseen counts (badges)", responses={200: serializers.InboxCountsSerializer})
    @action(detail=False, methods=["get"], url_path="unread-count")
    def unread_count(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(inbox_services.inbox_counts(recipient=self.recipient()))

    @extend_schema(summary="Mark an item read", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def read(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_read(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Mark an item unread", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def unread(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_unread(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Archive an item", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_archive(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Unarchive an item", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=True, methods=["post"])
    def unarchive(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_unarchive(recipient=self.recipient(), ids=[self.get_object().pk]))

    @extend_schema(summary="Mark every item read", request=None, responses={200: serializers.InboxChangedSerializer})
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_read(recipient=self.recipient()))

    @extend_schema(
        summary="Mark every item seen (clears the badge)",
        request=None,
        responses={200: serializers.InboxChangedSerializer},
    )
    @action(detail=False, methods=["post"], url_path="seen-all")
    def seen_all(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._changed(inbox_services.inbox_mark_seen(recipient=self.recipient()))
