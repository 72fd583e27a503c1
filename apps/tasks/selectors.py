"""Reads for the tasks API: executions and schedules as the caller's tenant sees them."""

from __future__ import annotations

import functools
import uuid
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from apps.core.rows import db_param, model_columns, model_from_row
from apps.tasks.models import TaskExecution

# The list leaves out the potentially large columns; a client fetches one task for its result.
LIST_DEFERRED = ("result", "error_traceback")


def executions_for_api() -> QuerySet[TaskExecution]:
    """One query per read: the retry that replaced a failed execution comes in the same SELECT."""
    return TaskExecution.objects.select_related("retried_as").only(
        *[f.name for f in TaskExecution._meta.concrete_fields], "retried_as__id"
    )


@functools.cache
def _poll_sql() -> tuple[str, str]:
    """The two statements of a poll, built once: Django's ORM compiled the same SELECT on every request,
    which was a third of a poll's Python (docs/benchmarks.md, "API")."""
    q = connection.ops.quote_name
    table = q(TaskExecution._meta.db_table)
    retry_of = q(TaskExecution._meta.get_field("retry_of").column)
    columns = model_columns(TaskExecution, "t")
    where = f"WHERE t.{q('id')} = %s AND t.{q('tenant_id')} = %s"
    # Names from the model's own metadata, quoted; the values are parameters.
    join = f"LEFT JOIN {table} r ON r.{retry_of} = t.{q('id')}"
    full = f"SELECT {columns}, r.{q('id')} FROM {table} t {join} {where}"  # noqa: S608
    version = f"SELECT t.{q('version')}, t.{q('status')} FROM {table} t {where}"  # noqa: S608
    return full, version


def parse_uuid(value: Any) -> uuid.UUID | None:
    """The id in a URL, or None when it is no UUID (the URL pattern admits 32 to 36 hex digits and dashes)."""
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None


def _params(execution_id: uuid.UUID, tenant_id: Any) -> list[Any]:
    """The two ids as the ORM sends them: PostgreSQL takes a UUID, SQLite (`make run`) its hex."""
    return [db_param(TaskExecution, "id", execution_id), db_param(TaskExecution, "tenant", tenant_id)]


def execution_for_poll(*, tenant_id: Any, execution_id: uuid.UUID) -> TaskExecution | None:
    """One execution in the tenant with the id of its retry, in one indexed read: what
    `executions_for_api().get(...)` returns, without building the query each time."""
    full = _poll_sql()[0]
    with connection.cursor() as cursor:
        cursor.execute(full, _params(execution_id, tenant_id))
        row = cursor.fetchone()
    if row is None:
        return None
    execution = model_from_row(TaskExecution, list(row[:-1]))
    retried_as = TaskExecution(id=row[-1]) if row[-1] is not None else None
    relation: Any = TaskExecution._meta.get_field("retried_as")
    relation.set_cached_value(execution, retried_as)  # as select_related("retried_as") leaves it
    return execution


def execution_version(*, tenant_id: Any, execution_id: uuid.UUID) -> tuple[int, str] | None:
    """(version, status) of one execution in the tenant: all that a conditional poll answered with 304 needs."""
    with connection.cursor() as cursor:
        cursor.execute(_poll_sql()[1], _params(execution_id, tenant_id))
        row = cursor.fetchone()
    return (row[0], row[1]) if row is not None else None


def execution_etag(execution_id: uuid.UUID, version: int) -> str:
    """The ETag of an execution at a version (`TaskExecution.etag`, without loading the row)."""
    return f'"{execution_id.hex}.{version}"'


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
