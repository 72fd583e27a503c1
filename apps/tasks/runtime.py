"""What a running task sees: `TaskContext` (progress, cancellation, files) and the errors it may raise.

Writes are cheap by design. `progress()` writes at most once per `PROGRESS_INTERVAL_SECONDS`
or when the whole percent changes, so a tight loop calling it a million times costs a handful of
UPDATEs; `check_cancelled()` reads the row at most every `CANCEL_CHECK_INTERVAL_SECONDS`. A
heartbeat thread (one per worker process) renews the lease while the task runs, whether or not
the task reports progress, so only a dead process lets its lease expire.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import timedelta
from typing import IO, Any

from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import F
from django.utils import timezone

from apps.tasks.conf import tasks_settings
from apps.tasks.models import Status, TaskExecution
from apps.tasks.services.executions import execution_live_changed

log = logging.getLogger(__name__)


class TaskError(Exception):
    """Ends the execution `failed` with this code and message, shown to the client. Never retried.

    Use it for outcomes the client should understand ("no_deliveries_match", "file_too_large"),
    not for transient trouble: any other exception is retried with backoff.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Cancelled(Exception):
    """Raised by `ctx.check_cancelled()` once the client cancelled; ends the execution `cancelled`."""


class Superseded(Exception):
    """This attempt no longer owns the row (its lease lapsed and another attempt took over): stop quietly."""


class TaskContext:
    """Passed to every tracked task as its first argument."""

    def __init__(self, execution: TaskExecution) -> None:
        self.execution_id: uuid.UUID = execution.id
        self.tenant_id: Any = execution.tenant_id
        self.name = execution.name
        self.input: dict[str, Any] = dict(execution.input or {})
        self.attempt = execution.attempts
        self.max_attempts = execution.max_attempts
        self._dispatch = execution.dispatch
        self._settings = tasks_settings()
        self.current = execution.progress_current
        self.total = execution.progress_total
        self.message = execution.progress_message
        self._written = (self.current, self.total, self.message)
        self._last_write = time.monotonic()
        self._last_percent = self._percent()
        self._last_cancel_check = 0.0
        self._cancel_requested = execution.cancel_requested_at is not None
        self.file: tuple[str, str, str, int] | None = None  # (path, filename, content type, size)

    # --- progress -----------------------------------------------------------------------------

    def progress(self, current: int, total: int | None = None, message: str | None = None) -> None:
        """Reports progress; written at most once a second, or when the whole percent changes."""
        self.current = int(current)
        if total is not None:
            self.total = int(total)
        if message is not None:
            self.message = message[:500]
        now = time.monotonic()
        percent = self._percent()
        if now - self._last_write >= self._settings.progress_interval_seconds or percent != self._last_percent:
            self.flush()

    def flush(self) -> None:
        """Writes the latest progress now, if it changed since the last write."""
        state = (self.current, self.total, self.message)
        if state == self._written:
            return
        updated = self._owned().update(
            progress_current=self.current,
            progress_total=self.total,
            progress_message=self.message,
            lease_expires_at=timezone.now() + timedelta(seconds=self._settings.lease_seconds),
            version=F("version") + 1,
            updated_at=timezone.now(),
        )
        if updated != 1:
            raise Superseded
        execution_live_changed(execution_id=self.execution_id)
        self._written = state
        self._last_write = time.monotonic()
        self._last_percent = self._percent()

    def heartbeat(self) -> None:
        """Renews the lease now. Rarely needed: a heartbeat thread does it while the task runs."""
        if self._owned().update(lease_expires_at=timezone.now() + timedelta(seconds=self._settings.lease_seconds)) != 1:
            raise Superseded

    def _percent(self) -> int | None:
        if not self.total:
            return None
        return int(100 * self.current / self.total)

    def _owned(self) -> Any:
        return TaskExecution.objects.filter(pk=self.execution_id, dispatch=self._dispatch, status=Status.RUNNING)

    # --- cancellation ---------------------------------------------------------------------------

    @property
    def cancel_requested(self) -> bool:
        self._refresh_cancel()
        return self._cancel_requested

    def check_cancelled(self) -> None:
        """Raises `Cancelled` if the client asked to cancel. Cheap: reads the row at most every 0.5 s."""
        self._refresh_cancel()
        if self._cancel_requested:
            raise Cancelled

    def _refresh_cancel(self) -> None:
        now = time.monotonic()
        if self._cancel_requested or now - self._last_cancel_check < self._settings.cancel_check_interval_seconds:
            return
        self._last_cancel_check = now
        row = (
            TaskExecution.objects.filter(pk=self.execution_id)
            .values_list("cancel_requested_at", "status", "dispatch")
            .first()
        )
        if row is None or row[1] != Status.RUNNING or row[2] != self._dispatch:
            raise Superseded
        self._cancel_requested = row[0] is not None

    # --- files ----------------------------------------------------------------------------------

    def save_file(
        self, filename: str, content: bytes | IO[bytes] | File[Any], content_type: str = "application/octet-stream"
    ) -> str:
        """Stores the execution's download (one per execution) in default_storage; returns its path.

        The client downloads it from `GET /api/v1/tasks/<id>/download/` once the task succeeded.
        It expires with the execution (`delete_at`).
        """
        if self.file is not None:
            default_storage.delete(self.file[0])
        body: File[Any]
        if isinstance(content, bytes):
            body = ContentFile(content)
        elif isinstance(content, File):
            body = content
        else:
            body = File(content)
        safe_name = os.path.basename(filename) or "download"
        path = default_storage.save(f"tasks/{self.tenant_id or 'platform'}/{self.execution_id}/{safe_name}", body)
        self.file = (path, safe_name, content_type, default_storage.size(path))
        return path

    def discard_file(self) -> None:
        if self.file is not None:
            default_storage.delete(self.file[0])
            self.file = None


class Heartbeat:
    """One daemon thread per worker process renewing the lease of the execution it is running.

    The thread opens its own database connection only while a task runs longer than one beat,
    and closes it when idle, so short tasks never cost a second connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[uuid.UUID, uuid.UUID] | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, execution_id: uuid.UUID, dispatch: uuid.UUID) -> None:
        with self._lock:
            self._current = (execution_id, dispatch)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="signalbox-task-heartbeat", daemon=True)
                self._thread.start()

    def clear(self) -> None:
        with self._lock:
            self._current = None

    def _loop(self) -> None:
        settings = tasks_settings()
        while True:
            time.sleep(settings.heartbeat_seconds)
            with self._lock:
                current = self._current
            try:
                if current is None:
                    if connection.connection is not None:
                        connection.close()
                    continue
                TaskExecution.objects.filter(pk=current[0], dispatch=current[1], status=Status.RUNNING).update(
                    lease_expires_at=timezone.now() + timedelta(seconds=settings.lease_seconds)
                )
            except Exception:  # the database blinked: try again next beat on a fresh connection
                log.warning("task heartbeat failed", exc_info=True)
                connection.close()


heartbeat = Heartbeat()
