"""Flows API (`notifications:write` for writes, `read` for reads).

GET/POST  /api/v1/flows/                          flows (current versions) / save a new version
GET       /api/v1/flows/<key>/                    one flow
DELETE    /api/v1/flows/<key>/                    archive it (running notifications go on)
GET       /api/v1/flows/<key>/diagram/            Mermaid
GET       /api/v1/notifications/<id>/flow/        the notification's flow: status, per-step counts, diagram
GET       /api/v1/notifications/<id>/flow-runs/   each recipient's run: step, status, history
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import NotFound
from apps.core.idempotency import idempotent_create
from apps.core.schema import ERROR_RESPONSES
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.flows import diagram
from apps.flows.models import Flow, FlowInstance, FlowRun
from apps.flows.serializers import (
    FlowDiagramSerializer,
    FlowDocumentSerializer,
    FlowInstanceSerializer,
    FlowRunSerializer,
    FlowSerializer,
)
from apps.flows.services.definitions import flow_archive, flow_save
from apps.flows.services.engine import step_counts
from apps.tenancy.models import Scope

KEY_REGEX = r"[a-z0-9][a-z0-9_-]{0,63}"


class FlowViewSet(TenantScopedMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet[Flow]):
    queryset = Flow.objects.select_related("current_version").all()
    serializer_class = FlowSerializer
    lookup_field = "key"
    lookup_value_regex = KEY_REGEX
    write_scope = Scope.NOTIFICATIONS_WRITE
    filterset_fields = ["key"]

    @extend_schema(summary="Flows (their current versions)", responses={200: FlowSerializer(many=True)})
    def list(self, request: Request, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset().filter(archived_at__isnull=True))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Save a flow (a new version of its key)",
        description="201 with the new version; 200 when the document equals the current version. "
        "400 `validation_error` names every problem under `fields` (unknown channel, unreachable step, loop).",
        request=FlowDocumentSerializer,
        responses={201: FlowSerializer, 200: FlowSerializer, **ERROR_RESPONSES},
    )
    @idempotent_create("flows.create")
    def create(self, request: Request, **kwargs: Any) -> Response:
        version, created = flow_save(tenant=request_tenant(request), document=request.data)
        flow = Flow.objects.select_related("current_version").get(pk=version.flow_id)
        return Response(
            self.get_serializer(flow).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(summary="One flow", responses={200: FlowSerializer})
    def retrieve(self, request: Request, **kwargs: Any) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(summary="Archive a flow", responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        flow_archive(flow=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="The flow as Mermaid", responses={200: FlowDiagramSerializer})
    @action(detail=True, methods=["get"])
    def diagram(self, request: Request, **kwargs: Any) -> Response:
        flow = self.get_object()
        version = flow.current_version
        if version is None:
            raise NotFound("The flow has no version.")
        return Response({"flow": flow.key, "version": version.version, "mermaid": diagram.mermaid(version.steps)})


class NotificationFlowViewSet(TenantScopedMixin, viewsets.GenericViewSet[FlowInstance]):
    """A notification's flow and its runs (404 for a notification without one, or another tenant's)."""

    queryset = FlowInstance.objects.select_related("flow_version__flow")
    serializer_class = FlowInstanceSerializer

    def _instance(self) -> FlowInstance:
        found = self.get_queryset().filter(pk=self.kwargs["notification_id"]).first()
        if found is None:
            raise NotFound("No flow runs for this notification.")
        return found

    @extend_schema(
        summary="The notification's flow: status, runs per step, diagram",
        parameters=[OpenApiParameter("notification_id", str, OpenApiParameter.PATH)],
        responses={200: FlowInstanceSerializer},
    )
    def summary(self, request: Request, **kwargs: Any) -> Response:
        instance = self._instance()
        counts = step_counts(instance=instance)
        here = {step: sum(n for s, n in by.items() if s in FlowRun.ACTIVE) for step, by in counts.items()}
        context = {"counts": counts, "mermaid": diagram.mermaid(instance.flow_version.steps, counts=here)}
        return Response(FlowInstanceSerializer(instance, context=context).data)


class FlowRunViewSet(TenantScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet[FlowRun]):
    queryset = FlowRun.objects.select_related("recipient").order_by("id")
    serializer_class = FlowRunSerializer
    filterset_fields = ["status", "step"]

    def get_queryset(self) -> Any:
        qs = super().get_queryset()
        notification_id = self.kwargs["notification_id"]
        if not FlowInstance.objects.filter(tenant=request_tenant(self.request), pk=notification_id).exists():
            raise NotFound("No flow runs for this notification.")
        return qs.filter(notification_id=notification_id)

    @extend_schema(
        summary="Each recipient's run through the notification's flow",
        parameters=[OpenApiParameter("notification_id", str, OpenApiParameter.PATH)],
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
