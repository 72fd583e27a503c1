"""The beat-driven upkeep of executions: the sweeper (nothing stuck) and the purge (nothing kept forever).

The sweeper repairs the three ways an execution can be forgotten:
1. committed but never published (a crash between COMMIT and the publish), or waiting in
   `run_after` for a start or retry too far off for a Celery countdown;
2. published but the message was lost (a broker that lost data): still waiting long after the
   visibility timeout would have redelivered it;
3. claimed by a worker that died: `running` with a lease nobody renews.
Each repair is a compare-and-set on the dispatch token, so a sweeper racing a worker, or a
second sweeper, does nothing twice. Intent executions belong to their app's sweeper.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Q
from django.utils import timezone

from apps.observability import metrics
from apps.tasks.conf import tasks_settings
from apps.tasks.models import DISPATCHED_KINDS, WAITING, Status, TaskExecution
from apps.tasks.services.executions import execution_publish_on_commit, execution_requeue_lost

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    published: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"published": len(self.published), "requeued": len(self.requeued), "ended": len(self.ended)}


def executions_sweep(*, now: datetime | None = None, batch_size: int = 500) -> SweepReport:
    now = now or timezone.now()
    cfg = tasks_settings()
    report = SweepReport()
    visibility = int(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600))  # type: ignore[call-overload]
    settled = now - timedelta(seconds=cfg.publish_grace_seconds)

    unpublished = Q(published_at__isnull=True, updated_at__lt=settled) | Q(
        published_at__lt=now - timedelta(seconds=visibility + cfg.publish_grace_seconds)
    )
    waiting = TaskExecution.objects.filter(
        unpublished,
        status__in=WAITING,
        kind__in=DISPATCHED_KINDS,
        run_after__lte=now + timedelta(seconds=cfg.countdown_max_seconds),
    ).order_by("run_after")[:batch_size]
    for execution in waiting:
        dispatch = uuid.uuid4()
        claimed = TaskExecution.objects.filter(pk=execution.pk, dispatch=execution.dispatch, status__in=WAITING).update(
            dispatch=dispatch, published_at=None
        )
        if claimed != 1:
            continue
        execution.dispatch = dispatch
        execution_publish_on_commit(execution, countdown=(execution.run_after - now).total_seconds())
        report.published.append(str(execution.pk))

    lapsed = TaskExecution.objects.filter(
        status=Status.RUNNING, kind__in=DISPATCHED_KINDS, lease_expires_at__lt=now
    ).order_by("lease_expires_at")[:batch_size]
    for execution in lapsed:
        if execution_requeue_lost(execution=execution, now=now):
            report.requeued.append(str(execution.pk))
        else:
            report.ended.append(str(execution.pk))

    metrics.SWEEPER_RECOVERED.labels(kind="task_execution").inc(len(report.published) + len(report.requeued))
    if report.published or report.requeued or report.ended:
        log.info("task sweeper recovered executions", extra=report.as_dict())
    return report


def executions_purge_expired(*, now: datetime | None = None, batch_size: int = 1000, max_batches: int = 50) -> int:
    """Deletes finished executions past `delete_at`, with their files, in short batches."""
    now = now or timezone.now()
    purged = 0
    for _ in range(max_batches):
        rows = list(
            TaskExecution.objects.filter(delete_at__lt=now)
            .order_by("delete_at")
            .values_list("pk", "result_file")[:batch_size]
        )
        if not rows:
            break
        for _pk, path in rows:
            if path:
                default_storage.delete(path)
        deleted, _ = TaskExecution.objects.filter(pk__in=[pk for pk, _path in rows], delete_at__lt=now).delete()
        purged += len(rows)
        metrics.ROWS_PURGED.labels(table="task_executions").inc(len(rows))
        del deleted
    return purged
