"""The tasks API: task types, start/poll/cancel/retry/download of executions, and schedules.

A client starts work with `POST /api/v1/tasks/` (202 + `Location`), then polls the
`Location` with `If-None-Match` until the status is final; `Retry-After` says how long to wait.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import NotFound
from apps.core.filters import IsoDateTimeFilter
from apps.core.idempotency import accepts_idempotency_key, idempotent, idempotent_create
from apps.core.pagination import CreatedCursorPagination
from apps.core.tenancy import TenantScopedMixin, request_tenant
from apps.tasks import selectors
from apps.tasks.conf import poll_retry_after_seconds
from apps.tasks.models import ACTIVE, Kind, Schedule, Status, TaskExecution
from apps.tasks.registry import task_types
from apps.tasks.serializers import (
    ScheduleCreateSerializer,
    ScheduleSerializer,
    ScheduleUpdateSerializer,
    TaskCancelSerializer,
    TaskExecutionListSerializer,
    TaskExecutionSerializer,
    TaskStartSerializer,
    TaskTypeSerializer,
    execution_representation,
    schedule_url,
    task_url,
)
from apps.tasks.services import executions as execution_services
from apps.tasks.services import schedules as schedule_services
from apps.tenancy.actors import actor_from_request
from apps.tenancy.models import Scope

UUID_PATTERN = r"[0-9a-fA-F-]{32,36}"


def _is_staff(request: Request) -> bool:
    return bool(getattr(request.auth, "is_platform", False))


def _poll_headers(execution: TaskExecution) -> dict[str, str]:
    return _headers(execution.etag, execution.status)


def _headers(etag: str, status: str) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if status in ACTIVE:
        headers["Retry-After"] = str(poll_retry_after_seconds())
    return headers


class TaskTypeListView(APIView):
    @extend_schema(responses={200: TaskTypeSerializer(many=True)}, summary="Startable task types")
    def get(self, request: Request, **kwargs: Any) -> Response:
        return Response(TaskTypeSerializer(task_types(), many=True).data)


class TaskExecutionFilter(django_filters.FilterSet):
    status = django_filters.CharFilter(method="filter_status", help_text="One status, or several: failed,dead.")
    name = django_filters.CharFilter()
    kind = django_filters.ChoiceFilter(choices=Kind.choices)
    created_after = IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    schedule = django_filters.UUIDFilter(field_name="schedule_id")
    retry_of = django_filters.UUIDFilter(field_name="retry_of_id")

    class Meta:
        model = TaskExecution
        fields: list[str] = []

    def filter_status(self, queryset: Any, name: str, value: str) -> Any:
        wanted = {v.strip() for v in value.split(",") if v.strip()}
        unknown = sorted(wanted - set(Status.values))
        if unknown:
            raise serializers.ValidationError({"status": [f"Unknown status: {', '.join(unknown)}."]})
        return queryset.filter(status__in=wanted)


class FirstRendererNegotiation(BaseContentNegotiation):
    """Downloads answer with the file whatever the client's Accept header says."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0]

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class TaskExecutionViewSet(
    TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[TaskExecution]
):
    queryset = TaskExecution.objects.all()
    serializer_class = TaskExecutionSerializer
    write_scope = Scope.TASKS_WRITE
    filterset_class = TaskExecutionFilter
    pagination_class = CreatedCursorPagination
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self) -> Any:
        base = selectors.executions_for_list() if self.action == "list" else selectors.executions_for_api()
        return base.filter(tenant=request_tenant(self.request))

    def get_serializer_class(self) -> Any:
        return TaskExecutionListSerializer if self.action == "list" else TaskExecutionSerializer

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "staff": _is_staff(self.request)}

    def _accepted(self, execution: TaskExecution) -> Response:
        data = self.get_serializer(execution).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers=_poll_headers(execution))

    @extend_schema(
        request=TaskStartSerializer,
        responses={202: TaskExecutionSerializer},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
        summary="Start a task",
        description="Validates the input, records the execution and queues it. Poll the `Location`.",
    )
    @accepts_idempotency_key("tasks.start")
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = TaskStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tenant = request_tenant(request)

        def start() -> tuple[Response, str]:
            execution = execution_services.task_start(
                tenant=tenant,
                name=body.validated_data["name"],
                input=body.validated_data["input"],
                actor=actor_from_request(request),
                idempotency_key=request.headers.get("Idempotency-Key", "").strip() or None,
                scheduled_at=body.validated_data.get("scheduled_at"),
            )
            return self._accepted(execution), str(execution.id)

        response = idempotent(request, scope="tasks.start", create=start)
        return _with_location(response)

    @extend_schema(
        responses={
            200: TaskExecutionSerializer,
            304: OpenApiResponse(description="Unchanged since the ETag in If-None-Match."),
        },
        parameters=[OpenApiParameter("If-None-Match", str, OpenApiParameter.HEADER, required=False)],
        summary="Poll a task",
        description="One indexed read. Send the last `ETag` in `If-None-Match` to get 304 while nothing changed; "
        "while the task is active, `Retry-After` says when to poll again.",
    )
    def retrieve(self, request: Request, **kwargs: Any) -> Response:
        # The hot path of the API: a client polls until the task is final. A conditional poll reads the
        # version alone and answers 304 from it; otherwise (or once it changed) one read of the row. Both
        # reads carry the caller's tenant in their WHERE, as `TenantScopedMixin.get_object` does.
        tenant_id = request_tenant(request).pk
        execution_id = selectors.parse_uuid(self.kwargs[self.lookup_url_kwarg or self.lookup_field])
        if execution_id is None:
            raise Http404
        if_none_match = request.headers.get("If-None-Match", "")
        if if_none_match:
            found = selectors.execution_version(tenant_id=tenant_id, execution_id=execution_id)
            if found is None:
                raise Http404
            version, current = found
            etag = selectors.execution_etag(execution_id, version)
            if selectors.etag_matches(if_none_match, etag):
                return Response(status=status.HTTP_304_NOT_MODIFIED, headers=_headers(etag, current))
        execution = selectors.execution_for_poll(tenant_id=tenant_id, execution_id=execution_id)
        if execution is None:
            raise Http404
        self.check_object_permissions(request, execution)
        body = execution_representation(execution, staff=_is_staff(request))
        return Response(body, headers=_poll_headers(execution))

    @extend_schema(
        request=TaskCancelSerializer,
        responses={
            200: OpenApiResponse(TaskExecutionSerializer, description="Cancelled."),
            202: OpenApiResponse(TaskExecutionSerializer, description="Running: asked to stop at its next check."),
            409: OpenApiResponse(description="`task_finished`: nothing left to cancel."),
        },
        summary="Cancel a task",
    )
    @action(detail=True, methods=["post"])
    @idempotent_create("tasks.cancel")
    def cancel(self, request: Request, **kwargs: Any) -> Response:
        body = TaskCancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        execution = execution_services.execution_cancel(
            execution=self.get_object(), actor=actor_from_request(request), terminate=body.validated_data["terminate"]
        )
        code = status.HTTP_200_OK if execution.status == Status.CANCELLED else status.HTTP_202_ACCEPTED
        return Response(self.get_serializer(execution).data, status=code, headers=_poll_headers(execution))

    @extend_schema(
        request=None,
        responses={
            202: TaskExecutionSerializer,
            409: OpenApiResponse(description="`not_retryable` or `already_retried`."),
        },
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)],
        summary="Retry a failed or dead task",
        description="Starts a new execution (linked by `retry_of`) with the same input; poll its `Location`.",
    )
    @action(detail=True, methods=["post"])
    @accepts_idempotency_key("tasks.retry")
    def retry(self, request: Request, **kwargs: Any) -> Response:
        execution = self.get_object()

        def start() -> tuple[Response, str]:
            retry = execution_services.execution_retry(execution=execution, actor=actor_from_request(request))
            return self._accepted(retry), str(retry.id)

        return _with_location(idempotent(request, scope=f"tasks.retry.{execution.id}", create=start))

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiResponse(description="The file.")},
        summary="Download a task's file",
    )
    @action(detail=True, methods=["get"], content_negotiation_class=FirstRendererNegotiation)
    def download(self, request: Request, **kwargs: Any) -> FileResponse:
        execution = self.get_object()
        if execution.status != Status.SUCCEEDED or not execution.result_file:
            raise NotFound("This task has no file to download.", code="no_download")
        try:
            handle = default_storage.open(execution.result_file, "rb")
        except FileNotFoundError:
            raise NotFound("The file has expired.", code="no_download") from None
        return FileResponse(
            handle,
            as_attachment=True,
            filename=execution.result_filename or "download",
            content_type=execution.result_content_type or "application/octet-stream",
        )


def _with_location(response: Response) -> Response:
    if response.status_code == status.HTTP_202_ACCEPTED and isinstance(response.data, dict):
        response["Location"] = task_url(response.data["id"])
    return response


class ScheduleViewSet(
    TenantScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[Schedule],
):
    queryset = Schedule.objects.all()
    serializer_class = ScheduleSerializer
    write_scope = Scope.TASKS_WRITE
    lookup_value_regex = UUID_PATTERN
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    @extend_schema(request=ScheduleCreateSerializer, responses={201: ScheduleSerializer})
    @idempotent_create("schedules.create")
    def create(self, request: Request, **kwargs: Any) -> Response:
        body = ScheduleCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        schedule = schedule_services.schedule_create(
            tenant=request_tenant(request),
            name=data["name"],
            description=data["description"],
            kind=data["kind"],
            target=data["target"],
            cron=data["cron"],
            interval_seconds=data["interval_seconds"],
            timezone_name=data["timezone"],
            enabled=data["enabled"],
            actor=actor_from_request(request),
        )
        return Response(
            ScheduleSerializer(schedule).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": schedule_url(schedule.id)},
        )

    @extend_schema(request=ScheduleUpdateSerializer, responses={200: ScheduleSerializer})
    def partial_update(self, request: Request, **kwargs: Any) -> Response:
        body = ScheduleUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        schedule = schedule_services.schedule_update(
            schedule=self.get_object(), changes=dict(body.validated_data), actor=actor_from_request(request)
        )
        return Response(ScheduleSerializer(schedule).data)

    def perform_destroy(self, instance: Schedule) -> None:
        schedule_services.schedule_delete(schedule=instance, actor=actor_from_request(self.request))

    @extend_schema(request=None, responses={200: ScheduleSerializer}, summary="Pause a schedule")
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, **kwargs: Any) -> Response:
        schedule = schedule_services.schedule_pause(schedule=self.get_object(), actor=actor_from_request(request))
        return Response(ScheduleSerializer(schedule).data)

    @extend_schema(request=None, responses={200: ScheduleSerializer}, summary="Resume a schedule")
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, **kwargs: Any) -> Response:
        schedule = schedule_services.schedule_resume(schedule=self.get_object(), actor=actor_from_request(request))
        return Response(ScheduleSerializer(schedule).data)
