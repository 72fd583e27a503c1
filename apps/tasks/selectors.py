"""Reads for the tasks API: executions and schedules as the caller's tenant sees them."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.tasks.models import TaskExecution

# The list leaves out the potentially large columns; a client fetches one task for its result.
LIST_DEFERRED = ("result", "error_traceback")


def executions_for_api() -> QuerySet[TaskExecution]:
    """One query per read: the retry that replaced a failed execution comes in the same SELECT."""
    return TaskExecution.objects.select_related("retried_as").only(
        *[f.name for f in TaskExecution._meta.concrete_fields], "retried_as__id"
    )


def executions_for_list() -> QuerySet[TaskExecution]:
    return executions_for_api().defer(*LIST_DEFERRED)


def etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 `If-None-Match`: a list of (possibly weak) entity tags, or `*`."""
    if not header:
        return False
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == etag for c in candidates)


def retried_as_id(execution: TaskExecution) -> Any:
    try:
        return execution.retried_as.id  # type: ignore[attr-defined]
    except TaskExecution.DoesNotExist:
        return None
