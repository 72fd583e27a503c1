"""`/api/v1/deliveries/`: deliveries with their attempts, and replaying failed or dead ones."""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from apps.core.filters import IsoDateTimeFilter
from apps.core.idempotency import idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications import serializers
from apps.notifications.api.common import UUID_PATTERN, WRITE
from apps.notifications.models import Delivery
from apps.notifications.services import replay as replay_services
from apps.tenancy.actors import actor_from_request


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
    list=extend_schema(summary="List deliveries", responses={200: serializers.DeliverySerializer(many=True)}),
    retrieve=extend_schema(
        summary="A delivery with what was sent and every attempt",
        responses={200: serializers.DeliveryDetailSerializer},
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
        responses={202: serializers.DeliveryReplayResultSerializer},
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
