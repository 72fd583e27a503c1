"""`/api/v1/recipients/`: recipients, their preferences, inbox tokens and webhook secrets."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import ApplicationError, NotFound
from apps.core.idempotency import idempotent_create
from apps.core.schema import ERROR_RESPONSES, ErrorSerializer
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications import serializers
from apps.notifications.api.common import EXTERNAL_ID_PATTERN, WRITE, InboxAccess
from apps.notifications.authentication import RecipientTokenAuthentication, recipient_of
from apps.notifications.models import Recipient
from apps.notifications.services import inbox as inbox_services
from apps.notifications.services import preferences as preference_services
from apps.notifications.services import recipients as recipient_services
from apps.observability.audit import audit_record
from apps.tenancy.actors import actor_from_request
from apps.tenancy.authentication import ApiKeyAuthentication


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
    list=extend_schema(summary="List recipients", responses={200: serializers.RecipientSerializer(many=True)}),
    retrieve=extend_schema(summary="A recipient by external_id", responses={200: serializers.RecipientSerializer}),
    create=extend_schema(
        summary="Create a recipient",
        description="Only `external_id` is required. To create or update many at once, use "
        "`POST /api/v1/recipients/bulk/`.",
        responses={
            201: serializers.RecipientSerializer,
            409: OpenApiResponse(ErrorSerializer, description="A recipient with this external_id exists."),
            400: ERROR_RESPONSES[400],
        },
        examples=RECIPIENT_EXAMPLES,
    ),
    update=extend_schema(summary="Replace a recipient's attributes", responses={200: serializers.RecipientSerializer}),
    partial_update=extend_schema(summary="Change some attributes", responses={200: serializers.RecipientSerializer}),
    destroy=extend_schema(summary="Delete a recipient and their deliveries", responses={204: None}),
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
        responses={200: serializers.RecipientBulkResultSerializer},
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
        responses={200: serializers.PreferencesReadSerializer},
    )
    @extend_schema(
        methods=["PUT"],
        summary="Replace a recipient's preferences",
        request=serializers.PreferencesSerializer,
        responses={200: serializers.PreferencesReadSerializer},
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
        responses={201: serializers.InboxTokenSerializer},
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
        responses={204: None},
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
        responses={201: serializers.WebhookSecretSerializer, 204: None},
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
