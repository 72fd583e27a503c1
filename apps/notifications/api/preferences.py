"""`/api/v1/preferences/defaults/`: the tenant's default preferences."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.tenancy import request_tenant
from apps.notifications import serializers
from apps.notifications.api.common import LAYER_ORDER, WRITE
from apps.notifications.models import Preference
from apps.notifications.services import preferences as preference_services
from apps.observability.audit import audit_record
from apps.tenancy.actors import actor_from_request


class DefaultPreferencesView(APIView):
    """The tenant's default preferences: the layers every recipient inherits from."""

    write_scope = WRITE

    @extend_schema(
        summary="The tenant's default preferences",
        responses={200: serializers.PreferencesSerializer},
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
        responses={200: serializers.PreferencesSerializer},
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
