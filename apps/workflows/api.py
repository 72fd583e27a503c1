"""Workflow API (`transitions:write` for writes, `read` for reads).

GET/POST  /api/v1/workflows/                                   definitions (latest versions) / a new version
GET       /api/v1/workflows/<key>/[?version=]                  one definition
GET       /api/v1/workflows/<key>/versions/                    every version
GET       /api/v1/workflows/<key>/diagram/[?version=&subject_id=]   Mermaid and DOT
GET/POST  /api/v1/workflows/<key>/instances/                   instances / create one
GET       /api/v1/workflows/<key>/instances/<subject_id>/      state, data, transitions available to the caller
POST      /api/v1/workflows/<key>/instances/<subject_id>/transitions/[?wait=true]   a transition intent
GET       /api/v1/workflows/<key>/instances/<subject_id>/transitions/               its intents
GET       /api/v1/workflows/<key>/instances/<subject_id>/history/   the transition log
GET       /api/v1/workflows/<key>/instances/<subject_id>/diagram/   the diagram, current state marked
GET       /api/v1/transition-intents/[<id>/]                   intents (also polled as /api/v1/tasks/<task_id>/)
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.actors import Actor
from apps.core.errors import Conflict, Unprocessable, error_body
from apps.core.idempotency import accepts_idempotency_key, idempotent, idempotent_create
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import Scope
from apps.workflows import diagram, selectors
from apps.workflows.guards import REFUSAL_STATUS
from apps.workflows.models import IntentStatus, TransitionIntent, WorkflowDefinition, WorkflowInstance
from apps.workflows.serializers import (
    DiagramSerializer,
    InstanceCreateSerializer,
    TransitionIntentSerializer,
    TransitionLogSerializer,
    TransitionRequestSerializer,
    WorkflowDefinitionSerializer,
    WorkflowDocumentSerializer,
    WorkflowInstanceDetailSerializer,
    WorkflowInstanceSerializer,
)
from apps.workflows.services.definitions import definition_save
from apps.workflows.services.instances import instance_create
from apps.workflows.services.transitions import intent_apply, intent_create

KEY_REGEX = r"[a-z0-9][a-z0-9_-]{0,63}"

VERSION_PARAM = OpenApiParameter("version", int, description="A version number; the latest by default.")


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name) or ""
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise Unprocessable(f"{name} is a number.", code="invalid_parameter", fields={name: ["A number."]}) from exc


def _diagram(definition: WorkflowDefinition, current: str | None) -> dict[str, Any]:
    spec = definition.parsed
    return {
        "workflow": definition.key,
        "version": definition.version,
        "current_state": current,
        "mermaid": diagram.mermaid(spec, current=current),
        "dot": diagram.dot(spec, current=current),
    }


class WorkflowDefinitionViewSet(TenantScopedMixin, viewsets.GenericViewSet[WorkflowDefinition]):
    queryset = WorkflowDefinition.objects.all()
    serializer_class = WorkflowDefinitionSerializer
    lookup_field = "key"
    lookup_value_regex = KEY_REGEX
    write_scope = Scope.TRANSITIONS_WRITE

    @extend_schema(
        summary="Workflows (the latest version of each)",
        responses={200: WorkflowDefinitionSerializer(many=True)},
    )
    def list(self, request: Request, **kwargs: Any) -> Response:
        page = self.paginate_queryset(selectors.definitions_latest(tenant=request_tenant(request)))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Save a workflow definition (a new version of its key)",
        description="201 with the new version; 200 with the latest one when the document is unchanged. "
        "422 `invalid_workflow` lists every problem under `fields`.",
        request=WorkflowDocumentSerializer,
        responses={201: WorkflowDefinitionSerializer, 200: WorkflowDefinitionSerializer},
    )
    @idempotent_create("workflows.create")
    def create(self, request: Request, **kwargs: Any) -> Response:
        definition, created = definition_save(
            tenant=request_tenant(request), document=request.data, actor=actor_from_request(request)
        )
        return Response(
            self.get_serializer(definition).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(
        summary="One workflow definition",
        parameters=[VERSION_PARAM],
        responses={200: WorkflowDefinitionSerializer},
    )
    def retrieve(self, request: Request, key: str, **kwargs: Any) -> Response:
        definition = selectors.definition_version(
            tenant=request_tenant(request), key=key, version=_int_param(request, "version")
        )
        return Response(self.get_serializer(definition).data)

    @extend_schema(
        summary="Every version of a workflow, newest first",
        responses={200: WorkflowDefinitionSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, key: str, **kwargs: Any) -> Response:
        found = self.get_queryset().filter(key=key).order_by("-version")
        if not found.exists():
            selectors.definition_latest(tenant=request_tenant(request), key=key)  # raises 404
        page = self.paginate_queryset(found)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="The workflow as Mermaid and Graphviz DOT",
        parameters=[
            VERSION_PARAM,
            OpenApiParameter("subject_id", str, description="Mark this instance's state (and use its version)."),
        ],
        responses={200: DiagramSerializer},
    )
    @action(detail=True, methods=["get"])
    def diagram(self, request: Request, key: str, **kwargs: Any) -> Response:
        tenant = request_tenant(request)
        subject_id = request.query_params.get("subject_id")
        if subject_id:
            instance = selectors.instance_get(
                tenant=tenant, key=key, subject_id=subject_id, subject_type=request.query_params.get("subject_type", "")
            )
            return Response(_diagram(instance.definition, instance.state))
        definition = selectors.definition_version(tenant=tenant, key=key, version=_int_param(request, "version"))
        return Response(_diagram(definition, None))


class WorkflowInstanceViewSet(TenantScopedMixin, viewsets.GenericViewSet[WorkflowInstance]):
    queryset = WorkflowInstance.objects.select_related("definition")
    serializer_class = WorkflowInstanceSerializer
    lookup_field = "subject_id"
    lookup_value_regex = r"[^/]+"
    write_scope = Scope.TRANSITIONS_WRITE

    def get_queryset(self) -> Any:
        return super().get_queryset().filter(workflow_key=self.kwargs["key"])

    def _instance(self) -> WorkflowInstance:
        return selectors.instance_get(
            tenant=request_tenant(self.request),
            key=self.kwargs["key"],
            subject_id=self.kwargs["subject_id"],
            subject_type=self.request.query_params.get("subject_type", ""),
        )

    @extend_schema(
        summary="Instances of a workflow",
        parameters=[OpenApiParameter("state", str), OpenApiParameter("subject_type", str)],
        responses={200: WorkflowInstanceSerializer(many=True)},
    )
    def list(self, request: Request, key: str, **kwargs: Any) -> Response:
        found = self.get_queryset().order_by("-created_at")
        for name in ("state", "subject_type"):
            if request.query_params.get(name):
                found = found.filter(**{name: request.query_params[name]})
        page = self.paginate_queryset(found)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Start a workflow instance for a subject (in the initial state of the latest version)",
        request=InstanceCreateSerializer,
        responses={201: WorkflowInstanceDetailSerializer},
    )
    @accepts_idempotency_key("workflows.instance")
    def create(self, request: Request, key: str, **kwargs: Any) -> Response:
        body = InstanceCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        actor = actor_from_request(request)

        def create() -> tuple[Response, str]:
            instance = instance_create(tenant=request_tenant(request), key=key, actor=actor, **body.validated_data)
            return Response(self._detail(instance, actor), status=status.HTTP_201_CREATED), str(instance.pk)

        return idempotent(request, scope="workflows.instance", create=create)

    def _detail(self, instance: WorkflowInstance, actor: Actor) -> Any:
        context = {
            **self.get_serializer_context(),
            "transitions": selectors.transitions_for(instance=instance, actor=actor),
        }
        return WorkflowInstanceDetailSerializer(instance, context=context).data

    @extend_schema(
        summary="An instance: its state, data, and the transitions this caller can take now",
        parameters=[OpenApiParameter("subject_type", str, description="Only when ids collide across types.")],
        responses={200: WorkflowInstanceDetailSerializer},
    )
    def retrieve(self, request: Request, **kwargs: Any) -> Response:
        return Response(self._detail(self._instance(), actor_from_request(request)))

    @extend_schema(
        methods=["POST"],
        summary="Record a transition intent (202 + a task to poll; ?wait=true applies it now)",
        description="Refused at once: unknown_transition, invalid_payload (422), transition_forbidden (403), "
        "conflict (409: the instance is already past `if_version`). "
        "When applied: invalid_source_state, conflict (409), guard_failed, effect_failed (422). "
        "Of intents accepted at one instance version (`if_version`, else the version at acceptance) "
        "exactly one applies; the others end `conflict`. "
        "With ?wait=true the answer is 200 with the applied intent and the instance, or the refusal's status "
        "and code with the refused `intent` and the `instance` as it is now; a `conflict` refused at once "
        "carries the `instance` too.",
        parameters=[OpenApiParameter("wait", bool, description="Apply synchronously (same code path).")],
        request=TransitionRequestSerializer,
        responses={
            202: OpenApiResponse(TransitionIntentSerializer, description="Recorded; poll `poll_url`."),
            200: OpenApiResponse(TransitionIntentSerializer, description="Applied (?wait=true)."),
            409: OpenApiResponse(
                description="Refused: conflict (at once for a stale if_version; or, with ?wait=true, when another "
                "transition won) or invalid_source_state (?wait=true)."
            ),
            422: OpenApiResponse(description="Refused: invalid payload, unknown transition, guard or effect failed."),
        },
    )
    @extend_schema(
        methods=["GET"],
        summary="The instance's transition intents, newest first",
        responses={200: TransitionIntentSerializer(many=True)},
    )
    @action(detail=True, methods=["get", "post"])
    @accepts_idempotency_key("workflows.transition")
    def transitions(self, request: Request, **kwargs: Any) -> Response:
        instance = self._instance()
        if request.method == "GET":
            page = self.paginate_queryset(
                cast(Any, instance.intents.select_related("instance").order_by("-created_at"))
            )
            return self.get_paginated_response(TransitionIntentSerializer(page, many=True).data)
        body = TransitionRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wait = request.query_params.get("wait", "").lower() in ("1", "true", "yes")
        actor = actor_from_request(request)

        def create() -> tuple[Response, str]:
            intent = intent_create(instance=instance, actor=actor, publish=not wait, **body.validated_data)
            if wait:
                intent = intent_apply(intent_id=intent.pk)
            return _intent_response(intent, wait=wait), str(intent.pk)

        try:
            return idempotent(request, scope=f"workflows.transition:{instance.pk}", create=create)
        except Conflict as exc:
            if exc.code != "conflict":
                raise
            # Refused at once (an `if_version` the instance has left): the same answer as a refusal
            # at apply time, with the instance as it is now.
            instance.refresh_from_db()
            return Response(_refusal(exc.code, exc.message, exc.fields, instance), status=status.HTTP_409_CONFLICT)

    @extend_schema(
        summary="The instance's transition log, oldest first",
        responses={200: TransitionLogSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def history(self, request: Request, **kwargs: Any) -> Response:
        page = self.paginate_queryset(cast(Any, selectors.instance_history(instance=self._instance())))
        return self.get_paginated_response(TransitionLogSerializer(page, many=True).data)

    @extend_schema(
        summary="The instance's workflow as Mermaid and DOT, its state marked",
        responses={200: DiagramSerializer},
    )
    @action(detail=True, methods=["get"])
    def diagram(self, request: Request, **kwargs: Any) -> Response:
        instance = self._instance()
        return Response(_diagram(instance.definition, instance.state))


def _intent_response(intent: TransitionIntent, *, wait: bool) -> Response:
    data = TransitionIntentSerializer(intent).data
    if not wait:
        retry_after = str(settings.SIGNALBOX["POLL_RETRY_AFTER_SECONDS"])
        return Response(
            data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["poll_url"], "Retry-After": retry_after}
        )
    instance = WorkflowInstance.objects.select_related("definition").get(pk=intent.instance_id)
    current = WorkflowInstanceSerializer(instance).data
    if intent.status == IntentStatus.APPLIED:
        return Response({**data, "instance": current}, status=status.HTTP_200_OK)
    body = {**_refusal(intent.error_code, intent.error_message, intent.error_fields, instance), "intent": data}
    return Response(body, status=REFUSAL_STATUS.get(intent.error_code, status.HTTP_409_CONFLICT))


def _refusal(code: str, message: str, fields: Any, instance: WorkflowInstance) -> dict[str, Any]:
    """A refused transition's answer: the error, and the instance as it is now (after a `conflict`,
    the state and version the intent lost to)."""
    return {**error_body(code, message, fields), "instance": WorkflowInstanceSerializer(instance).data}


class TransitionIntentViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[TransitionIntent]
):
    queryset = TransitionIntent.objects.select_related("instance").order_by("-created_at")
    serializer_class = TransitionIntentSerializer
    filterset_fields = ["status", "transition"]
