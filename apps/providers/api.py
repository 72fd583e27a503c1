"""Providers API (`admin` scope for writes; configs are read with `admin` too).

    GET               /api/v1/providers/                   every provider per channel: chain position, health
    GET/POST          /api/v1/providers/configs/           the tenant's own provider accounts
    GET/PATCH/DELETE  /api/v1/providers/configs/<id>/
    POST              /api/v1/providers/<id|name>/test/    send a test message; answers the SendResult

Secrets are accepted on create and change and only ever shown masked.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.idempotency import idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.providers import selectors, services
from apps.providers.base import SendResult
from apps.providers.models import ProviderConfig
from apps.providers.serializers import (
    ProviderConfigCreateSerializer,
    ProviderConfigSerializer,
    ProviderConfigUpdateSerializer,
    ProviderStatusSerializer,
    ProviderTestSerializer,
    SendResultSerializer,
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
