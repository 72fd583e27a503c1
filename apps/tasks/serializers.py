"""API shapes of executions, task types and schedules. Serializers shape and validate; services decide."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from apps.tasks.models import WAITING, Schedule, ScheduleKind, TaskExecution
from apps.tasks.selectors import retried_as_id
from apps.tasks.services.schedules import schedule_next_run


def task_url(execution_id: Any) -> str:
    return f"/api/v1/tasks/{execution_id}/"


def schedule_url(schedule_id: Any) -> str:
    return f"/api/v1/schedules/{schedule_id}/"


class ProgressSerializer(serializers.Serializer[TaskExecution]):
    current = serializers.IntegerField(source="progress_current")
    total = serializers.IntegerField(source="progress_total", allow_null=True)
    percent = serializers.FloatField(allow_null=True, help_text="0-100, when the total is known.")
    message = serializers.CharField(source="progress_message")


ExecutionError = inline_serializer(
    name="TaskExecutionError",
    fields={
        "code": serializers.CharField(help_text="Stable machine-readable code, e.g. timeout, internal_error."),
        "message": serializers.CharField(),
    },
    allow_null=True,
)
Actor = inline_serializer(name="TaskActor", fields={"type": serializers.CharField(), "id": serializers.CharField()})


class TaskExecutionSerializer(serializers.ModelSerializer[TaskExecution]):
    url = serializers.SerializerMethodField()
    progress = ProgressSerializer(source="*", read_only=True)
    error = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()
    actor = serializers.SerializerMethodField()
    cancel_requested = serializers.SerializerMethodField()
    next_attempt_at = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField(source="delete_at", read_only=True)
    schedule = serializers.UUIDField(source="schedule_id", read_only=True, allow_null=True)
    retry_of = serializers.UUIDField(source="retry_of_id", read_only=True, allow_null=True)
    retried_as = serializers.SerializerMethodField()

    class Meta:
        model = TaskExecution
        fields = [
            "id", "url", "name", "kind", "status", "input", "progress", "result", "download_url", "error",
            "attempts", "max_attempts", "queue", "cancel_requested", "created_at", "scheduled_at", "started_at",
            "finished_at", "next_attempt_at", "expires_at", "actor", "schedule", "scheduled_for", "retry_of",
            "retried_as",
        ]  # fmt: skip
        read_only_fields = fields

    def get_url(self, obj: TaskExecution) -> str:
        return task_url(obj.id)

    @extend_schema_field(ExecutionError)
    def get_error(self, obj: TaskExecution) -> dict[str, str] | None:
        return _error(obj, staff=bool(self.context.get("staff")))

    @extend_schema_field(OpenApiTypes.STR)
    def get_download_url(self, obj: TaskExecution) -> str | None:
        return _download_url(obj)

    @extend_schema_field(Actor)
    def get_actor(self, obj: TaskExecution) -> dict[str, str]:
        return {"type": obj.actor_type, "id": obj.actor_id}

    def get_cancel_requested(self, obj: TaskExecution) -> bool:
        return obj.cancel_requested_at is not None

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_next_attempt_at(self, obj: TaskExecution) -> str | None:
        return _next_attempt_at(obj)

    @extend_schema_field(OpenApiTypes.UUID)
    def get_retried_as(self, obj: TaskExecution) -> str | None:
        return _retried_as(obj)


def _error(obj: TaskExecution, *, staff: bool) -> dict[str, str] | None:
    if not obj.error_code:
        return None
    error = {"code": obj.error_code, "message": obj.error_message}
    # Staff (platform keys) see what went wrong inside; tenants never see a traceback.
    if staff:
        error.update(exception=obj.error_exception, traceback=obj.error_traceback)
    return error


def _download_url(obj: TaskExecution) -> str | None:
    if obj.result_file and obj.status == "succeeded":
        return f"{task_url(obj.id)}download/"
    return None


def _next_attempt_at(obj: TaskExecution) -> str | None:
    return obj.run_after.isoformat() if obj.status in WAITING else None


def _retried_as(obj: TaskExecution) -> str | None:
    retry = retried_as_id(obj)
    return str(retry) if retry else None


_DATETIME = serializers.DateTimeField()  # unbound: only its formatting is used (ISO 8601, UTC as Z)


def _datetime(value: Any) -> str | None:
    return None if value is None else _DATETIME.to_representation(value)


def _uuid(value: Any) -> str | None:
    return None if value is None else str(value)


def execution_representation(obj: TaskExecution, *, staff: bool) -> dict[str, Any]:
    """What `TaskExecutionSerializer` renders, built by hand for the poll, the API's hottest read: the
    serializer built its 25 fields on every request (about 2,800 function calls, half of a poll's
    Python). The serializer stays for the schema and the other routes; tests/tasks/test_poll_shape.py
    pins the two to the same output."""
    percent = obj.percent
    return {
        "id": str(obj.id),
        "url": task_url(obj.id),
        "name": obj.name,
        "kind": obj.kind,
        "status": obj.status,
        "input": obj.input,
        "progress": {
            "current": int(obj.progress_current),
            "total": None if obj.progress_total is None else int(obj.progress_total),
            "percent": None if percent is None else float(percent),
            "message": obj.progress_message,
        },
        "result": obj.result,
        "download_url": _download_url(obj),
        "error": _error(obj, staff=staff),
        "attempts": obj.attempts,
        "max_attempts": obj.max_attempts,
        "queue": obj.queue,
        "cancel_requested": obj.cancel_requested_at is not None,
        "created_at": _datetime(obj.created_at),
        "scheduled_at": _datetime(obj.scheduled_at),
        "started_at": _datetime(obj.started_at),
        "finished_at": _datetime(obj.finished_at),
        "next_attempt_at": _next_attempt_at(obj),
        "expires_at": _datetime(obj.delete_at),
        "actor": {"type": obj.actor_type, "id": obj.actor_id},
        "schedule": _uuid(obj.schedule_id),
        "scheduled_for": _datetime(obj.scheduled_for),
        "retry_of": _uuid(obj.retry_of_id),
        "retried_as": _retried_as(obj),
    }


class TaskExecutionListSerializer(TaskExecutionSerializer):
    """The list leaves out `result`: fetch one task for it."""

    class Meta(TaskExecutionSerializer.Meta):
        fields = [f for f in TaskExecutionSerializer.Meta.fields if f != "result"]
        read_only_fields = fields


class TaskStartSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200, help_text="A registered task name; see GET /api/v1/task-types/.")
    input = serializers.JSONField(default=dict, help_text="Validated against the task type's input_schema.")
    scheduled_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Do not start before.")


class TaskCancelSerializer(serializers.Serializer[Any]):
    terminate = serializers.BooleanField(
        default=False, help_text="Kill the running process now (only task types that declare it safe)."
    )


class TaskTypeSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    input_schema = serializers.SerializerMethodField()
    max_retries = serializers.IntegerField(source="retry.max_retries")
    soft_time_limit = serializers.IntegerField(help_text="Seconds; then the task ends failed with `timeout`.")
    time_limit = serializers.IntegerField(help_text="Seconds; then the process is killed.")
    terminable = serializers.BooleanField(help_text="Whether cancel accepts `terminate: true`.")

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_input_schema(self, obj: Any) -> dict[str, Any]:
        schema: dict[str, Any] = obj.input_schema()
        return schema


class ScheduleSerializer(serializers.ModelSerializer[Schedule]):
    url = serializers.SerializerMethodField()
    next_run_at = serializers.SerializerMethodField()
    last_execution = serializers.UUIDField(source="last_execution_id", read_only=True, allow_null=True)

    class Meta:
        model = Schedule
        fields = [
            "id", "url", "name", "description", "kind", "target", "cron", "interval_seconds", "timezone", "enabled",
            "next_run_at", "last_run_at", "last_execution", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_url(self, obj: Schedule) -> str:
        return schedule_url(obj.id)

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_next_run_at(self, obj: Schedule) -> str | None:
        following = schedule_next_run(obj)
        return following.isoformat() if following else None


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "task": {"type": "string", "description": "A task type's name (GET /api/v1/task-types/)."},
            "input": {"type": "object", "nullable": True, "description": "The task's input (null: none)."},
        },
        "required": ["task"],
        "additionalProperties": False,
    }
)
class ScheduleTargetField(serializers.JSONField):
    """What a "task" schedule runs; `apps.tasks.schedule_kinds` checks it (and the input, by task type)."""


@extend_schema_field({"type": "string", "enum": ScheduleKind.values})
class ScheduleKindField(serializers.CharField):
    """A schedule kind; `apps.tasks.schedule_kinds` refuses another (`unknown_schedule_kind`). A kind
    registered there is also a `ScheduleKind` choice, so the enum lists it."""


class ScheduleCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    kind = ScheduleKindField(default="task", help_text='What to run; "task" for now.')
    target = ScheduleTargetField(help_text='For kind "task": {"task": "<name>", "input": {...}}.')
    cron = serializers.CharField(required=False, allow_blank=True, default="", help_text='e.g. "0 3 * * 1-5".')
    interval_seconds = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    timezone = serializers.CharField(default="UTC", help_text="IANA timezone the cron expression is read in.")
    enabled = serializers.BooleanField(default=True)


class ScheduleUpdateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)
    target = ScheduleTargetField(required=False)
    cron = serializers.CharField(required=False, allow_blank=True)
    interval_seconds = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    timezone = serializers.CharField(required=False)
