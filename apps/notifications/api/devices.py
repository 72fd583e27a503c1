"""`/api/v1/recipients/<external_id>/devices/`: a recipient's push tokens."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.idempotency import idempotent_create
from apps.core.tenancy import request_tenant
from apps.notifications import serializers
from apps.notifications.api.common import WRITE
from apps.notifications.models import Device, Recipient
from apps.notifications.services import recipients as recipient_services


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

    @extend_schema(summary="Register a push token", responses={201: serializers.DeviceSerializer})
    @idempotent_create("recipients.devices.create")
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = serializers.DeviceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        device = recipient_services.device_register(
            recipient=self.recipient(), platform=body.validated_data["platform"], token=body.validated_data["token"]
        )
        return Response(serializers.DeviceSerializer(device).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Unregister a push token (it is deactivated)", responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        recipient_services.device_deactivate(device=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
