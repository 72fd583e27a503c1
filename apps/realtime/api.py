"""`GET /api/v1/realtime/schema/`: the live streams' message schema, from the REST API (WSGI)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.realtime.schema import message_schema


class RealtimeSchemaView(APIView):
    """Public like the OpenAPI description it complements: it describes shapes, holds no data."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="realtime_schema",
        summary="JSON Schema of the live stream messages",
        description=(
            "The messages of the inbox, task, notification and tenant activity streams (WebSocket and "
            "Server-Sent Events, served by the realtime process; docs/realtime.md), as one JSON Schema "
            "(draft 2020-12): `$defs` holds one schema per message `type`, `streams` maps each stream to "
            "the types it sends."
        ),
        responses={200: OpenApiTypes.OBJECT},
        tags=["realtime"],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(message_schema())
