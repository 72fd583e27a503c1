"""The four streams: what each replays on connect and how it turns a layer message into output.

Every message is `{"type": …, "id": <cursor>, "data": {…}}`. The inbox's id is the row's
`change_seq` (PostgreSQL sequence): resumable. A task's id is its `version`; a notification's is
the number of states this connection was sent: these two are *state* streams, so a reconnect
simply starts with the current state. Tenant activity is live only (ids order within one
connection). Database work is sync, run through `database_sync_to_async`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import Count

from apps.notifications.models import Delivery, Notification
from apps.notifications.services import inbox
from apps.realtime.auth import Principal, Refused
from apps.realtime.db import database_sync_to_async
from apps.tasks.models import FINISHED, TaskExecution

Msg = dict[str, Any]
NOTIFICATION_FINAL = ("completed", "cancelled", "failed")


class Stream:
    groups: list[str]
    refreshes = False  # re-read state every STATE_REFRESH_SECONDS
    final = False  # set once the last message is out: the stream then ends (1000 / `event: end`)

    def exists(self) -> bool:
        """Whether the followed object is the caller's (sync: checked before the stream opens)."""
        return True

    async def start(self, cursor: int | None) -> list[Msg]:
        """What to send first (a replay, or the current state); called after subscribing."""
        return []

    async def live(self, message: Msg) -> list[Msg]:
        return [message]

    async def refresh(self) -> list[Msg]:
        return []

    async def after_batch(self) -> list[Msg]:
        return []


class InboxStream(Stream):
    def __init__(self, principal: Principal) -> None:
        assert principal.recipient_pk is not None
        self.recipient_pk = principal.recipient_pk
        self.tenant_id = principal.tenant_id
        self.groups = [inbox.inbox_group(self.recipient_pk)]
        self.replayed: set[int] = set()
        self.counts_dirty = True

    async def start(self, cursor: int | None) -> list[Msg]:
        limit = int(settings.SIGNALBOX_REALTIME["REPLAY_LIMIT"])
        if cursor is None:
            cursor = await database_sync_to_async(inbox.inbox_cursor_now)(recipient_pk=self.recipient_pk)
            return [{"type": "ready", "id": cursor}]
        missed = await database_sync_to_async(inbox.inbox_changes_since)(
            recipient_pk=self.recipient_pk, cursor=cursor, limit=limit + 1
        )
        if len(missed) > limit:
            raise Refused(409, "replay_too_long", "Too much was missed: reload the inbox over REST, then reconnect.")
        # Live messages of these ids, already queued behind the replay, are dropped (the seam).
        self.replayed = {m["id"] for m in missed}
        last = missed[-1]["id"] if missed else cursor
        return [*missed, {"type": "ready", "id": last}]

    async def live(self, message: Msg) -> list[Msg]:
        if message.get("id") in self.replayed:
            return []
        self.counts_dirty = True
        return [message]

    async def after_batch(self) -> list[Msg]:
        if not self.counts_dirty:
            return []
        self.counts_dirty = False
        counts = await database_sync_to_async(_inbox_counts)(self.recipient_pk, self.tenant_id)
        return [{"type": "inbox.counts", "data": counts}]


def _inbox_counts(recipient_pk: int, tenant_id: str) -> dict[str, int]:
    from apps.notifications.models import Recipient

    return inbox.inbox_counts(recipient=Recipient(pk=recipient_pk, tenant_id=tenant_id))


class TaskStream(Stream):
    refreshes = True

    def __init__(self, principal: Principal, execution_id: str) -> None:
        self.tenant_id = principal.tenant_id
        self.execution_id = execution_id
        self.groups = [f"task.{execution_id}"]
        self.version = 0

    def exists(self) -> bool:
        return TaskExecution.objects.filter(pk=self.execution_id, tenant_id=self.tenant_id).exists()

    async def start(self, cursor: int | None) -> list[Msg]:
        self.version = cursor or 0
        found = await database_sync_to_async(self._read)()
        if found is None:
            raise Refused(404, "not_found", "No such task.")
        return found

    async def live(self, message: Msg) -> list[Msg]:
        return await self.refresh()

    async def refresh(self) -> list[Msg]:
        return await database_sync_to_async(self._read)() or []

    def _read(self) -> list[Msg] | None:
        row = TaskExecution.objects.filter(pk=self.execution_id, tenant_id=self.tenant_id).first()
        if row is None:
            return None
        if row.version <= self.version:
            return []
        self.version = row.version
        self.final = row.status in FINISHED
        data = {
            "id": str(row.id),
            "name": row.name,
            "status": row.status,
            "progress": {
                "current": row.progress_current,
                "total": row.progress_total,
                "percent": row.percent,
                "message": row.progress_message,
            },
            "error": {"code": row.error_code, "message": row.error_message} if row.error_code else None,
            "updated_at": row.updated_at.isoformat(),
        }
        return [{"type": "task.status", "id": row.version, "data": data}]


class NotificationStream(Stream):
    refreshes = True

    def __init__(self, principal: Principal, notification_id: str) -> None:
        self.tenant_id = principal.tenant_id
        self.notification_id = notification_id
        self.groups = [f"notification.{notification_id}"]
        self.sent = 0
        self.last: Any = None

    def exists(self) -> bool:
        return Notification.objects.filter(pk=self.notification_id, tenant_id=self.tenant_id).exists()

    async def start(self, cursor: int | None) -> list[Msg]:
        found = await database_sync_to_async(self._read)()
        if found is None:
            raise Refused(404, "not_found", "No such notification.")
        return found

    async def refresh(self) -> list[Msg]:
        return await database_sync_to_async(self._read)() or []

    def _read(self) -> list[Msg] | None:
        status = (
            Notification.objects.filter(pk=self.notification_id, tenant_id=self.tenant_id)
            .values_list("status", flat=True)
            .first()
        )
        if status is None:
            return None
        counts: dict[str, dict[str, int]] = {}
        for channel, state, n in (
            Delivery.objects.filter(notification_id=self.notification_id)
            .order_by()
            .values_list("channel", "status")
            .annotate(n=Count("id"))
        ):
            counts.setdefault(channel, {})[state] = n
        state_now = (status, counts)
        if state_now == self.last:
            return []
        self.last = state_now
        self.sent += 1
        self.final = status in NOTIFICATION_FINAL
        return [{"type": "notification.status", "id": self.sent, "data": {"status": status, "channels": counts}}]


class ActivityStream(Stream):
    """Delivery status changes of the tenant, live only (for dashboards)."""

    def __init__(self, principal: Principal) -> None:
        self.groups = [f"tenant.{principal.tenant_id}"]
        self.sent = 0

    async def live(self, message: Msg) -> list[Msg]:
        self.sent += 1
        return [{**message, "id": self.sent}]
