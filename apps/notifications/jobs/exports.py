"""`signalbox.exports.deliveries_csv`: a tenant's deliveries, filtered, as a CSV download."""

from __future__ import annotations

import csv
import io
import tempfile
from typing import Any

from django.core.files import File
from django.utils import timezone

from apps.notifications.jobs.filters import DeliveryFilterInput, deliveries_matching
from apps.tasks.registry import tracked_task
from apps.tasks.runtime import TaskContext, TaskError

MAX_ROWS = 1_000_000
CHUNK = 2000
COLUMNS = (
    ("id", "id"),
    ("created_at", "created_at"),
    ("notification_id", "notification_id"),
    ("recipient_id", "recipient_id"),
    ("recipient_external_id", "recipient__external_id"),
    ("channel", "channel"),
    ("status", "status"),
    ("suppression_reason", "suppression_reason"),
    ("provider", "provider"),
    ("provider_message_id", "provider_message_id"),
    ("attempts", "attempts"),
    ("error_code", "error_code"),
    ("last_error", "last_error"),
    ("queued_at", "queued_at"),
    ("sent_at", "sent_at"),
    ("delivered_at", "delivered_at"),
    ("failed_at", "failed_at"),
)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value)
    # Spreadsheets run cells starting with these as formulas: neutralise tenant-supplied text.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


@tracked_task(
    name="signalbox.exports.deliveries_csv",
    queue="tasks",
    input=DeliveryFilterInput,
    max_retries=2,
    retry_backoff=30,
    soft_time_limit=1800,
    time_limit=1860,
    terminable=True,
)
def deliveries_csv(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
    """Exports deliveries (by status, channel, notification, time) as CSV, downloadable when done."""
    deliveries = deliveries_matching(tenant_id=ctx.tenant_id, data=data)
    total = deliveries.count()
    if total > MAX_ROWS:
        raise TaskError("export_too_large", f"{total} deliveries match; narrow the filter to at most {MAX_ROWS}.")
    ctx.progress(0, total, "exporting")
    fields = [source for _, source in COLUMNS]
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, mode="w+b") as spool:
        text = io.TextIOWrapper(spool, encoding="utf-8", newline="")
        writer = csv.writer(text)
        writer.writerow([header for header, _ in COLUMNS])
        written = 0
        for row in deliveries.values_list(*fields).iterator(chunk_size=CHUNK):
            writer.writerow([_cell(value) for value in row])
            written += 1
            if written % 200 == 0:
                ctx.check_cancelled()
                ctx.progress(written, total, "exporting")
        text.flush()
        text.detach()
        spool.seek(0)
        filename = f"deliveries-{timezone.now():%Y%m%d-%H%M%S}.csv"
        ctx.save_file(filename, File(spool, name=filename), "text/csv")
    ctx.progress(written, total, "done")
    return {"rows": written, "filename": filename}
