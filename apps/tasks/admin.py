"""Admin for operators: every execution with its traceback, the dead letters, and tenants' schedules.

Records are read-only here; the actions go through the same services as the API (retry, cancel,
pause, resume), so the audit log and the beat schedule stay consistent.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from apps.core.errors import ApplicationError
from apps.tasks.models import Schedule, TaskExecution
from apps.tasks.services import execution_cancel, execution_retry
from apps.tasks.services.schedules import schedule_delete, schedule_pause, schedule_resume
from apps.tenancy.actors import actor_from_request


@admin.register(TaskExecution)
class TaskExecutionAdmin(admin.ModelAdmin[TaskExecution]):
    list_display = ("id", "name", "tenant", "status", "attempts", "queue", "progress", "created_at", "finished_at")
    list_filter = ("status", "kind", "queue", "name")
    search_fields = ("=id", "name", "=celery_task_id", "error_code")
    date_hierarchy = "created_at"
    list_select_related = ("tenant",)
    actions = ("retry_selected", "cancel_selected")
    fieldsets = (
        (None, {"fields": ("id", "tenant", "kind", "name", "status", "queue", "input")}),
        ("Progress and result", {"fields": ("progress", "result", "result_file", "result_size")}),
        ("Error (the traceback is never shown to tenants)", {"fields": ("error_code", "error_message",
                                                                         "error_exception", "traceback")}),
        ("Attempts", {"fields": ("attempts", "max_attempts", "run_after", "lease_expires_at", "cancel_requested_at",
                                 "worker", "celery_task_id", "dispatch", "published_at")}),
        ("Origin", {"fields": ("actor_type", "actor_id", "idempotency_key", "schedule", "scheduled_for",
                               "retry_of")}),
        ("Times", {"fields": ("created_at", "scheduled_at", "started_at", "attempt_started_at", "finished_at",
                              "updated_at", "delete_at")}),
    )  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f for fields in (opts["fields"] for _, opts in self.fieldsets) for f in fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="progress")
    def progress(self, obj: TaskExecution) -> str:
        percent = f" ({obj.percent}%)" if obj.percent is not None else ""
        return f"{obj.progress_current}/{obj.progress_total or '?'}{percent} {obj.progress_message}".strip()

    @admin.display(description="traceback")
    def traceback(self, obj: TaskExecution) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.error_traceback or "-")

    @admin.action(description="Retry selected failed or dead executions")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[TaskExecution]) -> None:
        actor = actor_from_request(request)
        self._each(request, queryset, lambda execution: execution_retry(execution=execution, actor=actor))

    @admin.action(description="Cancel selected executions")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[TaskExecution]) -> None:
        actor = actor_from_request(request)
        self._each(request, queryset, lambda execution: execution_cancel(execution=execution, actor=actor))

    def _each(self, request: HttpRequest, queryset: QuerySet[TaskExecution], act: Any) -> None:
        done = 0
        for execution in queryset:
            try:
                act(execution)
                done += 1
            except ApplicationError as exc:
                self.message_user(request, f"{execution.id}: {exc.message}", messages.WARNING)
        self.message_user(request, f"{done} execution(s) done.", messages.SUCCESS)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin[Schedule]):
    list_display = ("name", "tenant", "kind", "cron", "interval_seconds", "timezone", "enabled", "last_run_at")
    list_filter = ("enabled", "kind", "timezone")
    search_fields = ("name", "=id")
    list_select_related = ("tenant",)
    actions = ("pause_selected", "resume_selected")
    readonly_fields = (
        "id", "tenant", "name", "description", "kind", "target", "cron", "interval_seconds", "timezone", "enabled",
        "periodic_task", "created_at", "updated_at", "actor_type", "actor_id", "last_run_at", "last_execution_id",
    )  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Pause selected schedules")
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            schedule_pause(schedule=schedule, actor=actor_from_request(request))

    @admin.action(description="Resume selected schedules")
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            schedule_resume(schedule=schedule, actor=actor_from_request(request))

    def delete_model(self, request: HttpRequest, obj: Schedule) -> None:
        schedule_delete(schedule=obj, actor=actor_from_request(request))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        for schedule in queryset:
            self.delete_model(request, schedule)
