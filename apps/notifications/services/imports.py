"""Bulk import of recipients, and their topic memberships, from an uploaded NDJSON or CSV file.

`recipients_import_start` stores the upload in default_storage and starts the tracked task
`signalbox.notifications.import_recipients` (apps/notifications/tracked.py), which calls
`recipients_import_run`. Each row is checked with `recipient_clean`, the rules of the JSON API; an
invalid row is reported (row, field, message: the task's CSV download) and the valid ones still land.

On PostgreSQL the valid rows travel by COPY, `STAGE_ROWS` at a time, into a temporary table of this
import (it lives in the worker's session only, and is dropped at the end), and are merged into the
tenant's recipients with `INSERT … SELECT … ON CONFLICT (tenant, external_id) DO UPDATE`, `MERGE_ROWS`
rows per statement, then the topic memberships with `… ON CONFLICT DO NOTHING`. The statements do
not grow with the rows, and Python holds one row at a time: memory stays flat whatever the file size.
The merge only rewrites a recipient whose values change, so running the same file again changes
nothing. Nothing is merged before the whole file was read, so a file-level refusal (an unknown CSV
column, a cancel) leaves the tenant's data as it was. On other databases (the embedded SQLite
default) valid rows are upserted with the ORM in batches, as `POST /recipients/bulk/` does.

What a file holds, one recipient per line (NDJSON) or row (CSV, with a header):
the attributes of `POST /api/v1/recipients/` (`external_id` required) and an optional `topic`, the key
of a topic to subscribe the recipient to (created if the tenant has none of that key). An attribute
left out (a CSV cell left empty) keeps its stored value. CSV cells are text: `data` is a JSON object,
`unsubscribed` is true/false. An `external_id` listed twice: the first row wins, the later ones are
reported.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.core.validators import validate_slug
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.exceptions import ParseError

from apps.core.actors import Actor
from apps.core.errors import ApplicationError
from apps.core.parsers import check_text, loads
from apps.notifications.models import Recipient, Topic, TopicMembership
from apps.notifications.services.bulk import copy_rows
from apps.notifications.services.recipients import RECIPIENT_FIELDS, recipient_clean, recipients_write
from apps.tasks.services import task_start
from apps.tenancy.models import Tenant

TASK_NAME = "signalbox.notifications.import_recipients"
FORMATS = {"application/x-ndjson": "ndjson", "text/csv": "csv"}
UPLOAD_PREFIX = "imports"
STAGE_ROWS = 10_000  # rows per COPY into the staging table
MERGE_ROWS = 100_000  # rows of the staging table per merge statement
ORM_ROWS = 1_000  # rows per upsert on the embedded default
MAX_LINE_BYTES = 1024 * 1024  # an NDJSON line longer than this is an invalid row, never read whole
MAX_REPORTED_ERRORS = 100_000  # lines of the error report; the counts in the result stay exact
TOPIC_COLUMN = "topic"
# The attributes besides external_id, in staging order; each one's bit in a row's `mask` says it was given.
FIELDS = tuple(name for name in RECIPIENT_FIELDS if name != "external_id")
BIT = {name: 1 << index for index, name in enumerate(FIELDS)}
TEXT_FIELDS = tuple(name for name in FIELDS if name not in ("data", "unsubscribed"))
CSV_TRUE, CSV_FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


class ImportContext(Protocol):
    """What the import needs from its runner: the `TaskContext` of a tracked task gives all three."""

    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None: ...

    def check_cancelled(self) -> None: ...

    def save_file(self, filename: str, content: Any, content_type: str = ...) -> str: ...


class ImportRefused(Exception):
    """The file as a whole cannot be imported (an unknown CSV column, a broken CSV): nothing is merged."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- Starting ----------------------------------------------------------------------------------


def upload_path(*, tenant_id: Any, format: str) -> str:
    return f"{UPLOAD_PREFIX}/{tenant_id}/{uuid.uuid4().hex}.{format}"


def is_upload_of(path: str, *, tenant_id: Any) -> bool:
    """A stored upload of this tenant (the task input names one; another tenant's is refused)."""
    prefix = f"{UPLOAD_PREFIX}/{tenant_id}/"
    name = path[len(prefix) :]
    return path.startswith(prefix) and "/" not in name and ".." not in name and name.endswith((".ndjson", ".csv"))


def recipients_import_start(*, tenant: Any, upload: File[Any], format: str, actor: Actor) -> Any:
    """Stores the upload (a move, for a temporary file on the same disk) and starts the import task;
    returns its TaskExecution. The upload is deleted again if the task cannot be recorded."""
    path = default_storage.save(upload_path(tenant_id=tenant.pk, format=format), upload)
    try:
        return task_start(
            tenant=tenant, name=TASK_NAME, input={"upload": path, "format": format, "bytes": upload.size}, actor=actor
        )
    except BaseException:
        default_storage.delete(path)
        raise


# --- Reading rows ------------------------------------------------------------------------------


@dataclass
class Row:
    number: int  # the line (NDJSON) or record (CSV, the header is 1) in the file
    clean: dict[str, Any] = field(default_factory=dict)
    topic: str | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)


def _row(number: int, item: Any) -> Row:
    """One item checked by the JSON API's rules, with its topic."""
    if not isinstance(item, dict):
        return Row(number, errors={"non_field_errors": ["Must be an object."]})
    item = dict(item)
    topic = item.pop(TOPIC_COLUMN, None)
    clean, errors = recipient_clean(item)
    if topic in (None, ""):
        topic = None
    elif not isinstance(topic, str) or len(topic) > 100:
        errors[TOPIC_COLUMN] = ["A topic key: letters, digits, '-' and '_', at most 100."]
    else:
        try:
            validate_slug(topic)
        except ValidationError:
            errors[TOPIC_COLUMN] = ["A topic key: letters, digits, '-' and '_', at most 100."]
    return Row(number, clean=clean, topic=topic, errors=errors)


def _ndjson_rows(stream: IO[bytes]) -> Iterator[Row]:
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass  # skip the rest of the long line without holding it
            yield Row(number, errors={"non_field_errors": [f"Longer than {MAX_LINE_BYTES} bytes."]})
            continue
        if not line.strip():
            continue
        try:
            item = loads(line)
        except ApplicationError as exc:
            yield Row(number, errors={"non_field_errors": [exc.message]})
            continue
        except ParseError as exc:
            yield Row(number, errors={"non_field_errors": [str(exc.detail)]})
            continue
        yield _row(number, item)


def _csv_cell(name: str, value: str) -> Any:
    """A CSV cell as the JSON API would receive it (`data` as JSON, `unsubscribed` as a boolean)."""
    if name == "data":
        return loads(value)
    if name == "unsubscribed":
        lowered = value.strip().lower()
        if lowered in CSV_TRUE:
            return True
        if lowered in CSV_FALSE:
            return False
    return value


def _csv_rows(stream: IO[bytes]) -> Iterator[Row]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="", errors="strict")
    reader = csv.reader(text)
    try:
        header = [name.strip() for name in next(reader, [])]
        unknown = sorted(set(header) - {"external_id", *FIELDS, TOPIC_COLUMN})
        if unknown or "external_id" not in header or len(set(header)) != len(header):
            raise ImportRefused(
                "invalid_header",
                f"The CSV header must name external_id and only known columns "
                f"({', '.join(['external_id', *FIELDS, TOPIC_COLUMN])}), each once; unknown: {', '.join(unknown)}.",
            )
        for cells in reader:
            number = reader.line_num
            if not any(cells):
                continue
            if len(cells) != len(header):
                yield Row(number, errors={"non_field_errors": [f"{len(cells)} cells; the header has {len(header)}."]})
                continue
            item: dict[str, Any] = {}
            errors: dict[str, list[str]] = {}
            for name, value in zip(header, cells, strict=True):
                if value == "":
                    continue  # an empty cell keeps the stored value
                try:
                    check_text(value, path=name)
                    item[name] = _csv_cell(name, value)
                except ApplicationError as exc:
                    errors[name] = [exc.message]
                except ParseError as exc:
                    errors[name] = [str(exc.detail)]
            row = _row(number, item)
            row.errors.update(errors)
            yield row
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ImportRefused("invalid_csv", f"The CSV cannot be read after record {reader.line_num}: {exc}") from None
    finally:
        text.detach()


def _rows(stream: IO[bytes], format: str) -> Iterator[Row]:
    return _ndjson_rows(stream) if format == "ndjson" else _csv_rows(stream)


# --- The error report --------------------------------------------------------------------------


class Report:
    """The rows refused, as CSV (row, field, message), spooled to disk past 8 MiB."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+b")  # noqa: SIM115 (closed by save)
        self._text = io.TextIOWrapper(self.file, encoding="utf-8", newline="")
        self._writer = csv.writer(self._text)
        self._writer.writerow(["row", "field", "message"])
        self.rows = 0  # rows refused
        self.lines = 0

    def refuse(self, number: int, errors: dict[str, list[str]]) -> None:
        self.rows += 1
        for name, messages in errors.items():
            for message in messages:
                if self.lines < MAX_REPORTED_ERRORS:
                    # A cell never starts a formula in a spreadsheet: the message may quote the file.
                    safe = "'" + message if message[:1] in ("=", "+", "-", "@") else message
                    self._writer.writerow([number, name, safe])
                self.lines += 1

    def unlisted(self, rows: int) -> None:
        """Rows refused past the report's length: counted, not written."""
        self.rows += rows
        self.lines += rows

    def save(self, ctx: ImportContext) -> None:
        self._text.flush()
        self._text.detach()
        self.file.seek(0)
        ctx.save_file("errors.csv", File(self.file, name="errors.csv"), "text/csv")
        self.file.close()


# --- Running -----------------------------------------------------------------------------------


@dataclass
class Counts:
    rows: int = 0
    valid: int = 0
    created: int = 0
    updated: int = 0
    memberships_added: int = 0
    topics_created: int = 0


def recipients_import_run(*, ctx: ImportContext, tenant_id: Any, path: str, format: str) -> dict[str, Any]:
    """Imports the stored upload into the tenant's recipients; returns the counts. Raises
    `ImportRefused` for a file that cannot be imported at all (nothing is then merged)."""
    if format not in FORMATS.values():
        raise ImportRefused("invalid_format", f"Unknown format {format!r}.")
    size = default_storage.size(path)
    report = Report()
    counts = Counts()
    with default_storage.open(path, "rb") as stored:
        stream = getattr(stored, "file", stored)  # the file object itself: TextIOWrapper and tell() need it
        rows = _counted(_rows(stream, format), counts, report)
        if connection.vendor == "postgresql":
            _run_postgresql(
                ctx=ctx, tenant_id=tenant_id, rows=rows, stream=stream, size=size, counts=counts, report=report
            )
        else:
            _run_orm(ctx=ctx, tenant_id=tenant_id, rows=rows, counts=counts, report=report)
    report.save(ctx)
    ctx.progress(counts.valid, counts.valid, "done")
    return {
        "rows": counts.rows,
        "imported": counts.valid,
        "invalid": report.rows,
        "created": counts.created,
        "updated": counts.updated,
        "unchanged": counts.valid - counts.created - counts.updated,
        "memberships_added": counts.memberships_added,
        "topics_created": counts.topics_created,
        "errors_reported": min(report.lines, MAX_REPORTED_ERRORS),
        "errors_truncated": report.lines > MAX_REPORTED_ERRORS,
    }


def _counted(rows: Iterator[Row], counts: Counts, report: Report) -> Iterator[Row]:
    """The valid rows; the invalid ones go to the report."""
    for row in rows:
        counts.rows += 1
        if row.errors:
            report.refuse(row.number, row.errors)
        else:
            yield row


# --- PostgreSQL: COPY into a staging table, then merge ---------------------------------------

STAGE_TYPES = {"data": "jsonb", "unsubscribed": "boolean"}
RECIPIENTS = Recipient._meta.db_table
TOPICS = Topic._meta.db_table
MEMBERSHIPS = TopicMembership._meta.db_table


def _stage_tuple(row: Row) -> tuple[Any, ...]:
    clean = row.clean
    mask = 0
    values: list[Any] = []
    for name in FIELDS:
        if name in clean:
            mask |= BIT[name]
            value = clean[name]
            values.append(json.dumps(value) if name == "data" else value)
        else:
            values.append(None)
    return (row.number, mask, clean["external_id"], *values, row.topic)


def _run_postgresql(
    *,
    ctx: ImportContext,
    tenant_id: Any,
    rows: Iterator[Row],
    stream: IO[bytes],
    size: int,
    counts: Counts,
    report: Report,
) -> None:
    stage = f"import_stage_{uuid.uuid4().hex}"
    columns = ", ".join(
        [
            "row_no integer PRIMARY KEY",
            "mask integer NOT NULL",
            "external_id text NOT NULL",
            *(f"{name} {STAGE_TYPES.get(name, 'text')}" for name in FIELDS),
            f"{TOPIC_COLUMN} text",
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {stage} ({columns})")
    try:
        last_row = _stage(ctx=ctx, stage=stage, rows=rows, stream=stream, size=size, counts=counts)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {stage}")  # autovacuum never analyzes a temporary table
        _drop_duplicates(stage=stage, counts=counts, report=report)
        _merge(ctx=ctx, stage=stage, tenant_id=tenant_id, last_row=last_row, counts=counts)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {stage}")


def _stage(*, ctx: ImportContext, stage: str, rows: Iterator[Row], stream: IO[bytes], size: int, counts: Counts) -> int:
    """COPYs the valid rows into the staging table, `STAGE_ROWS` per statement; returns the last row number."""
    sql = f"COPY {stage} (row_no, mask, external_id, {', '.join(FIELDS)}, {TOPIC_COLUMN}) FROM STDIN"
    last_row = 0
    while True:
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(_stage_tuple(row))
            if len(batch) == STAGE_ROWS:
                break
        if not batch:
            return last_row
        copy_rows(sql, batch)
        counts.valid += len(batch)
        last_row = batch[-1][0]
        ctx.check_cancelled()
        ctx.progress(stream.tell(), size, f"read {counts.rows:,} rows, {counts.valid:,} valid")


def _drop_duplicates(*, stage: str, counts: Counts, report: Report) -> None:
    """Keeps the first row of each external_id: the later ones are reported and leave the stage."""
    duplicates = (
        f"SELECT row_no, first FROM (SELECT row_no, first_value(row_no) OVER "  # noqa: S608 (names are ours)
        f"(PARTITION BY external_id ORDER BY row_no) AS first FROM {stage}) ranked WHERE row_no <> first"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"{duplicates} ORDER BY row_no LIMIT %s", [MAX_REPORTED_ERRORS])
        found = cursor.fetchall()
        if not found:
            return
        cursor.execute(f"DELETE FROM {stage} WHERE row_no IN (SELECT row_no FROM ({duplicates}) d)")  # noqa: S608
        dropped = cursor.rowcount
    for number, first in found:
        report.refuse(number, {"external_id": [f"Listed twice in this file (first on row {first})."]})
    report.unlisted(dropped - len(found))
    counts.valid -= dropped


def _upsert_sql(stage: str, mask: int) -> str:
    """One INSERT … ON CONFLICT for the rows that gave exactly the fields of `mask`: a new recipient
    takes defaults for the others, an existing one keeps them, and is written only if a value changes."""
    given = [name for name in FIELDS if mask & BIT[name]]
    select = ["%(tenant)s", "s.external_id"]
    for name in TEXT_FIELDS:
        select.append(f"COALESCE(s.{name}, '')")
    select.append("COALESCE(s.data, '{}'::jsonb)")
    select.append("CASE WHEN s.unsubscribed THEN %(now)s::timestamptz END")
    select += ["%(now)s", "%(now)s"]
    insert_columns = ["tenant_id", "external_id", *TEXT_FIELDS, "data", "unsubscribed_at", "created_at", "updated_at"]
    sets, changed = [], []
    for name in given:
        if name == "unsubscribed":
            # Unsubscribing again keeps the first time; subscribing clears it.
            sets.append(
                "unsubscribed_at = CASE WHEN EXCLUDED.unsubscribed_at IS NULL THEN NULL "
                "ELSE COALESCE(r.unsubscribed_at, EXCLUDED.unsubscribed_at) END"
            )
            changed.append("(r.unsubscribed_at IS NULL) <> (EXCLUDED.unsubscribed_at IS NULL)")
        else:
            sets.append(f"{name} = EXCLUDED.{name}")
            changed.append(f"r.{name} IS DISTINCT FROM EXCLUDED.{name}")
    conflict = (
        f"DO UPDATE SET {', '.join([*sets, 'updated_at = EXCLUDED.updated_at'])} WHERE {' OR '.join(changed)}"
        if given
        else "DO NOTHING"
    )
    # Rows in external_id order: two imports touching the same recipients lock them in the same order.
    return (
        f"WITH merged AS (INSERT INTO {RECIPIENTS} AS r ({', '.join(insert_columns)}) "  # noqa: S608 (names are ours)
        f"SELECT {', '.join(select)} FROM {stage} s "
        f"WHERE s.row_no >= %(low)s AND s.row_no < %(high)s AND s.mask = %(mask)s ORDER BY s.external_id "
        f"ON CONFLICT (tenant_id, external_id) {conflict} RETURNING (xmax = 0) AS created) "
        f"SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM merged"
    )


def _merge(*, ctx: ImportContext, stage: str, tenant_id: Any, last_row: int, counts: Counts) -> None:
    now = timezone.now()
    tenant = uuid.UUID(str(tenant_id))  # a uuid parameter: a text one would not cast in a SELECT list
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT mask FROM {stage}")  # noqa: S608 (the stage's name is ours)
        masks = sorted(mask for (mask,) in cursor.fetchall())
        cursor.execute(
            f"WITH new AS (INSERT INTO {TOPICS} (tenant_id, key, name, description, created_at) "  # noqa: S608
            f"SELECT DISTINCT %s, {TOPIC_COLUMN}, '', '', %s FROM {stage} WHERE {TOPIC_COLUMN} IS NOT NULL "
            f"ON CONFLICT (tenant_id, key) DO NOTHING RETURNING 1) SELECT count(*) FROM new",
            [tenant, now],
        )
        counts.topics_created = cursor.fetchone()[0]
    memberships = (
        f"INSERT INTO {MEMBERSHIPS} (topic_id, recipient_id, created_at) "  # noqa: S608 (names are ours)
        f"SELECT t.id, r.id, %(now)s FROM {stage} s "
        f"JOIN {RECIPIENTS} r ON r.tenant_id = %(tenant)s AND r.external_id = s.external_id "
        f"JOIN {TOPICS} t ON t.tenant_id = %(tenant)s AND t.key = s.{TOPIC_COLUMN} "
        f"WHERE s.row_no >= %(low)s AND s.row_no < %(high)s "
        f"ON CONFLICT (topic_id, recipient_id) DO NOTHING"
    )
    merged = 0
    for low in range(1, last_row + 1, MERGE_ROWS):
        params: dict[str, Any] = {"tenant": tenant, "now": now, "low": low, "high": low + MERGE_ROWS}
        with transaction.atomic(), connection.cursor() as cursor:
            for mask in masks:
                cursor.execute(_upsert_sql(stage, mask), {**params, "mask": mask})
                created, updated = cursor.fetchone()
                counts.created += created
                counts.updated += updated
            cursor.execute(memberships, params)
            counts.memberships_added += cursor.rowcount
        merged = min(counts.valid, merged + MERGE_ROWS)
        ctx.check_cancelled()
        ctx.progress(merged, counts.valid, "merging")


# --- Elsewhere (the embedded SQLite default): batched upserts with the ORM -----------------------


def _run_orm(*, ctx: ImportContext, tenant_id: Any, rows: Iterator[Row], counts: Counts, report: Report) -> None:
    """The small path: no staging, `ORM_ROWS` rows per `recipients_write`. Holds the external ids seen (to
    report duplicates) and reads the whole file before writing, as the PostgreSQL path does, by
    spooling the valid rows to a temporary file."""
    tenant = Tenant.objects.get(pk=tenant_id)
    seen: dict[str, int] = {}
    with tempfile.TemporaryFile(mode="w+") as spool:
        for row in rows:
            external_id = row.clean["external_id"]
            if external_id in seen:
                report.refuse(
                    row.number, {"external_id": [f"Listed twice in this file (first on row {seen[external_id]})."]}
                )
                continue
            seen[external_id] = row.number
            counts.valid += 1
            spool.write(json.dumps([row.clean, row.topic]) + "\n")
        ctx.check_cancelled()
        spool.seek(0)
        topics: dict[str, int] = {}
        batch: list[tuple[dict[str, Any], str | None]] = []
        for line in spool:
            clean, topic = json.loads(line)
            batch.append((clean, topic))
            if len(batch) == ORM_ROWS:
                _orm_batch(tenant=tenant, batch=batch, topics=topics, counts=counts)
                batch = []
                ctx.progress(counts.created + counts.updated, counts.valid, "merging")
        if batch:
            _orm_batch(tenant=tenant, batch=batch, topics=topics, counts=counts)


def _orm_batch(
    *, tenant: Any, batch: list[tuple[dict[str, Any], str | None]], topics: dict[str, int], counts: Counts
) -> None:
    with transaction.atomic():
        result = recipients_write(tenant=tenant, cleaned=[clean for clean, _ in batch])
        counts.created += result["created"]
        counts.updated += result["updated"]
        wanted = {(clean["external_id"], topic) for clean, topic in batch if topic}
        if not wanted:
            return
        for key in {topic for _, topic in wanted} - set(topics):
            topic, created = Topic.objects.get_or_create(tenant=tenant, key=key)
            topics[key] = topic.pk
            counts.topics_created += int(created)
        ids = dict(
            Recipient.objects.filter(tenant=tenant, external_id__in={e for e, _ in wanted}).values_list(
                "external_id", "pk"
            )
        )
        pairs = {(topics[topic], ids[external_id]) for external_id, topic in wanted}
        existing = set(
            TopicMembership.objects.filter(
                topic_id__in={t for t, _ in pairs}, recipient_id__in={r for _, r in pairs}
            ).values_list("topic_id", "recipient_id")
        )
        new = pairs - existing
        TopicMembership.objects.bulk_create([TopicMembership(topic_id=t, recipient_id=r) for t, r in new])
        counts.memberships_added += len(new)
