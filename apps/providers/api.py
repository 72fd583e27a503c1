"""Providers API (`admin` scope for writes; configs are read with `admin` too).

    GET               /api/v1/providers/                   every provider per channel: chain position, health
    GET/POST          /api/v1/providers/configs/           the tenant's own provider accounts
    GET/PATCH/DELETE  /api/v1/providers/configs/<id>/
    POST              /api/v1/providers/<id|name>/test/    send a test message; answers the SendResult
    GET               /api/v1/suppressions/                the addresses not sent to (`read`)
    DELETE            /api/v1/suppressions/<id>/           allow an address again (`notifications:write`)

Secrets are accepted on create and change and only ever shown masked.
"""

from __future__ import annotations

from typing import Any

import django_filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.idempotency import idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.notifications.services.suppressions import normalize, suppression_delete
from apps.providers import selectors, services
from apps.providers.base import Channel, SendResult
from apps.providers.models import ProviderConfig, Suppression
from apps.providers.serializers import (
    ProviderConfigCreateSerializer,
    ProviderConfigSerializer,
    ProviderConfigUpdateSerializer,
    ProviderStatusSerializer,
    ProviderTestSerializer,
    SendResultSerializer,
    SuppressionSerializer,
)
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import Scope


class ProviderOverviewView(APIView):
    @extend_schema(
        summary="Providers per channel: configured, in the chain, healthy",
        description="The tenant's own configs first, then the environment's chain (used when the tenant has "
        "no usable config for the channel). Health checks are cached briefly.",
        responses={200: ProviderStatusSerializer(many=True)},
    )
    def get(self, request: Request, **kwargs: Any) -> Response:
        statuses = selectors.provider_statuses(tenant=request_tenant(request))
        return Response(ProviderStatusSerializer([s.as_dict() for s in statuses], many=True).data)


@extend_schema_view(
    list=extend_schema(summary="The tenant's provider configs", responses={200: ProviderConfigSerializer(many=True)}),
    retrieve=extend_schema(summary="One provider config", responses={200: ProviderConfigSerializer}),
    destroy=extend_schema(summary="Delete a provider config", responses={204: None}),
)
class ProviderConfigViewSet(
    TenantScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[ProviderConfig],
):
    queryset = ProviderConfig.objects.order_by("priority", "created_at")
    serializer_class = ProviderConfigSerializer
    read_scope = Scope.ADMIN
    write_scope = Scope.ADMIN
    filterset_fields = ["provider", "enabled"]

    @extend_schema(
        summary="Add a provider config",
        request=ProviderConfigCreateSerializer,
        responses={201: ProviderConfigSerializer},
    )
    @idempotent_create("providers.configs.create")
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = ProviderConfigCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        config = services.provider_config_create(
            tenant=request_tenant(request), actor=actor_from_request(request), **body.validated_data
        )
        return Response(ProviderConfigSerializer(config).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a provider config (options and secrets merge key by key)",
        request=ProviderConfigUpdateSerializer,
        responses={200: ProviderConfigSerializer},
    )
    def partial_update(self, request: Request, **kwargs: Any) -> Response:
        body = ProviderConfigUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        config = services.provider_config_update(
            config=self.get_object(), actor=actor_from_request(request), **body.validated_data
        )
        return Response(ProviderConfigSerializer(config).data)

    def perform_destroy(self, instance: ProviderConfig) -> None:
        services.provider_config_delete(config=instance, actor=actor_from_request(self.request))


def result_data(provider: str, result: SendResult) -> dict[str, Any]:
    return {
        "provider": result.provider or provider,
        "outcome": str(result.outcome),
        "message_id": result.message_id,
        "code": result.code,
        "detail": result.detail,
        "status_code": result.status_code,
        "retry_after": result.retry_after,
        "invalid_tokens": list(result.invalid_tokens),
    }


class ProviderTestView(APIView):
    write_scope = Scope.ADMIN

    @extend_schema(
        summary="Send a test message through one provider",
        description="`ref` is a provider config's id or name, or the name of an environment provider "
        "(`sendgrid`, `smtp`, `twilio`, …). The answer is the provider's result: 200 whatever the outcome.",
        request=ProviderTestSerializer,
        responses={200: SendResultSerializer},
    )
    def post(self, request: Request, ref: str, **kwargs: Any) -> Response:
        body = ProviderTestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        provider, result = services.provider_test_send(
            tenant=request_tenant(request), ref=ref, actor=actor_from_request(request), **body.validated_data
        )
        return Response(SendResultSerializer(result_data(provider, result)).data)


class SuppressionFilter(django_filters.FilterSet):
    channel = django_filters.ChoiceFilter(choices=Suppression._meta.get_field("channel").choices)
    reason = django_filters.MultipleChoiceFilter(choices=Suppression.Reason.choices)
    address = django_filters.CharFilter(
        method="filter_address", help_text="The exact address (emails match in any case)."
    )

    class Meta:
        model = Suppression
        fields = ["channel", "reason", "address"]

    def filter_address(self, queryset: Any, name: str, value: str) -> Any:
        # Stored normalised (emails lower-cased); exact matches keep the unique index usable.
        return queryset.filter(address__in={value.strip(), normalize(Channel.EMAIL, value)})


@extend_schema_view(
    list=extend_schema(
        summary="The suppression list: addresses not sent to",
        description="Addresses a provider refused for good (hard bounce, spam report, SMS STOP, invalid "
        "number, a 410 from a webhook or chat endpoint), newest first. Deliveries to them are suppressed "
        "(`suppressed_address`).",
        responses={200: SuppressionSerializer(many=True)},
    ),
    destroy=extend_schema(
        summary="Allow a suppressed address again",
        description="Deletes the entry (audited); later notifications and sends go to the address again.",
        responses={204: None},
    ),
)
class SuppressionViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet[Suppression]
):
    queryset = Suppression.objects.order_by("-created_at", "-id")
    serializer_class = SuppressionSerializer
    filterset_class = SuppressionFilter
    write_scope = Scope.NOTIFICATIONS_WRITE
    lookup_value_regex = r"[0-9]+"

    def perform_destroy(self, instance: Suppression) -> None:
        suppression_delete(suppression=instance, actor=actor_from_request(self.request))
