"""API for the caller's tenant and its keys (`admin` scope for writes)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.idempotency import idempotent_create
from apps.tenancy import services
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import ApiKey, Scope
from apps.tenancy.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeyRotateSerializer,
    ApiKeySerializer,
    TenantSerializer,
)


class CurrentTenantView(APIView):
    @extend_schema(responses={200: TenantSerializer}, summary="The tenant this key acts for")
    def get(self, request: Request, **kwargs: Any) -> Response:
        return Response(TenantSerializer(request.tenant).data)  # type: ignore[attr-defined]


def _created(key: ApiKey, clear: str) -> dict[str, Any]:
    data = dict(ApiKeySerializer(key).data)
    data["key"] = clear
    return data


class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[ApiKey]):
    serializer_class = ApiKeySerializer
    lookup_field = "prefix"
    read_scope = Scope.ADMIN
    write_scope = Scope.ADMIN
    queryset = ApiKey.objects.all()

    def get_queryset(self) -> Any:
        return ApiKey.objects.filter(tenant=self.request.tenant).order_by("-created")  # type: ignore[attr-defined]

    def _actor(self) -> str:
        return str(self.request.user)

    @extend_schema(request=ApiKeyCreateSerializer, responses={201: ApiKeyCreatedSerializer})
    @idempotent_create("api_keys.create", sealed=True)
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = ApiKeyCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key, clear = services.api_key_create(
            tenant=request.tenant,  # type: ignore[attr-defined]
            name=body.validated_data["name"],
            scopes=body.validated_data["scopes"],
            expires_at=body.validated_data.get("expires_at"),
            created_by=self._actor(),
            actor=actor_from_request(request),
        )
        return Response(_created(key, clear), status=status.HTTP_201_CREATED)

    @extend_schema(request=ApiKeyRotateSerializer, responses={201: ApiKeyCreatedSerializer})
    @action(detail=True, methods=["post"])
    @idempotent_create("api_keys.rotate", sealed=True)
    def rotate(self, request: Request, **kwargs: Any) -> Response:
        body = ApiKeyRotateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        key, clear = services.api_key_rotate(
            key=self.get_object(),
            old_key_expires_at=body.validated_data["old_key_expires_at"],
            created_by=self._actor(),
            actor=actor_from_request(request),
        )
        return Response(_created(key, clear), status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApiKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, **kwargs: Any) -> Response:
        key = services.api_key_revoke(key=self.get_object(), actor=actor_from_request(request))
        return Response(ApiKeySerializer(key).data)
