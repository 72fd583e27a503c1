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

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import NotFound
from apps.core.idempotency import idempotent_create
from apps.core.schema import ERROR_RESPONSES
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.flows import diagram, spec
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

NUDGE = {
    "key": "nudge",
    "name": "In-app, then email if unread",
    "template": "order_shipped",
    "steps": [
        {"id": "inbox", "type": "send", "channels": ["in_app"]},
        {
            "id": "check",
            "type": "branch",
            "if": {"channel": "in_app", "state": "read"},
            "wait": "30m",
            "then": "end",
            "else": "email",
        },
        {"id": "email", "type": "send", "channels": ["email"]},
        {"id": "end", "type": "exit"},
    ],
}
NUDGE_STEPS = spec.parse(NUDGE)[0].steps  # type: ignore[union-attr]  # a valid document: always parsed
NUDGE_MERMAID = diagram.mermaid(NUDGE_STEPS)
FLOW_ANSWER = {
    "key": "nudge",
    "name": "In-app, then email if unread",
    "version": 1,
    "template": "order_shipped",
    "cancel_on": None,
    "document": NUDGE,
    "steps": NUDGE_STEPS,
    "archived_at": None,
    "created_at": "2030-01-01T09:00:00Z",
    "updated_at": "2030-01-01T09:00:00Z",
}
FLOW_SAVE_EXAMPLES = [
    OpenApiExample("In-app, then email if still unread after 30 minutes", request_only=True, value=NUDGE),
    OpenApiExample(
        "A reminder in 24 h unless paid, by email then SMS if the email fails",
        request_only=True,
        value={
            "key": "pay_reminder",
            "template": "order_shipped",
            "cancel_on": {"event_type": "order.paid", "key": "order_id"},
            "steps": [
                {"id": "wait", "type": "delay", "duration": "24h"},
                {"id": "remind", "type": "fallback", "channels": ["email", "sms"], "wait": "2h"},
            ],
        },
    ),
    OpenApiExample("Saved: version 1", response_only=True, status_codes=["201"], value=FLOW_ANSWER),
    OpenApiExample(
        "Refused: a step leads back to an earlier one",
        response_only=True,
        status_codes=["400"],
        value={
            "code": "validation_error",
            "message": "The flow is invalid; nothing was saved. See fields.",
            "fields": {
                "steps[2].next": ["This makes a loop: check -> email -> check. A flow runs forward only."],
            },
        },
    ),
]
DIAGRAM_EXAMPLE = OpenApiExample("The flow as Mermaid", value={"flow": "nudge", "version": 1, "mermaid": NUDGE_MERMAID})
SUMMARY_EXAMPLE = OpenApiExample(
    "Half an hour in: one recipient read it, one got the email",
    value={
        "notification_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "flow": "nudge",
        "version": 1,
        "status": "finished",
        "recipient_count": 2,
        "cancel_reason": "",
        "counts": {"end": {"done": 2}},
        "mermaid": NUDGE_MERMAID,
        "created_at": "2030-01-01T09:00:00Z",
        "started_at": "2030-01-01T09:00:01Z",
        "finished_at": "2030-01-01T09:30:05Z",
    },
)
RUNS_EXAMPLE = OpenApiExample(
    "Bob's run: unread after 30 minutes, so the email went",
    value={
        "count": 1,
        "next": None,
        "previous": None,
        "results": [
            {
                "id": 2,
                "notification_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
                "recipient": "user-42",
                "step": "end",
                "phase": "enter",
                "status": "done",
                "due_at": None,
                "deadline_at": None,
                "attempts": 2,
                "history": [
                    {
                        "step": "inbox",
                        "at": "2030-01-01T09:00:01Z",
                        "event": "sent",
                        "to": "check",
                        "deliveries": {"in_app": "delivered"},
                    },
                    {
                        "step": "check",
                        "at": "2030-01-01T09:00:01Z",
                        "event": "waiting",
                        "why": "in_app is delivered, sent",
                        "until": "2030-01-01T09:30:01Z",
                    },
                    {
                        "step": "check",
                        "at": "2030-01-01T09:30:05Z",
                        "event": "branched",
                        "result": False,
                        "why": "in_app is delivered, sent",
                        "to": "email",
                    },
                    {
                        "step": "email",
                        "at": "2030-01-01T09:30:05Z",
                        "event": "sent",
                        "to": "end",
                        "deliveries": {"email": "queued"},
                    },
                    {"step": "end", "at": "2030-01-01T09:30:05Z", "event": "exit"},
                ],
                "created_at": "2030-01-01T09:00:00Z",
                "updated_at": "2030-01-01T09:30:05Z",
                "finished_at": "2030-01-01T09:30:05Z",
            }
        ],
    },
)


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
        "400 `validation_error` names every problem under `fields` when the document breaks its schema "
        "(unknown channel, malformed duration); 422 when a rule the schema cannot express refuses it "
        "(a target that is no step, unreachable step, loop, unknown template).",
        request=FlowDocumentSerializer,
        responses={201: FlowSerializer, 200: FlowSerializer, 400: ERROR_RESPONSES[400]},
        examples=FLOW_SAVE_EXAMPLES,
    )
    @idempotent_create("flows.create")
    def create(self, request: Request, **kwargs: Any) -> Response:
        version, created = flow_save(tenant=request_tenant(request), document=request.data)
        flow = Flow.objects.select_related("current_version").get(pk=version.flow_id)
        return Response(
            self.get_serializer(flow).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        summary="One flow",
        responses={200: FlowSerializer},
        examples=[OpenApiExample("The nudge flow", value=FLOW_ANSWER)],
    )
    def retrieve(self, request: Request, **kwargs: Any) -> Response:
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(summary="Archive a flow", responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        flow_archive(flow=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(summary="The flow as Mermaid", responses={200: FlowDiagramSerializer}, examples=[DIAGRAM_EXAMPLE])
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
        examples=[SUMMARY_EXAMPLE],
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
        examples=[RUNS_EXAMPLE],
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
