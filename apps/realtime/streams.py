"""The four streams: what each replays on connect and how it turns a layer message into output.

Every message is `{"type": …, "id": <cursor>, "data": {…}}`. The inbox's id is the row's
`change_seq` (PostgreSQL sequence): resumable. A task's id is its `version`; a notification's is
the number its state was read under (apps/notifications/services/live.py): these two are *state*
streams, so a reconnect simply starts with the current state. Tenant activity is live only (ids order within one
connection). Database work is sync, run through `database_sync_to_async`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.notifications.models import Notification
from apps.notifications.services import inbox
from apps.notifications.services.live import FINAL as NOTIFICATION_FINAL
from apps.notifications.services.live import notification_group, notification_live_state, notifications_tenant_group
from apps.realtime.auth import Principal, Refused
from apps.realtime.counts import batcher
from apps.realtime.db import database_sync_to_async
from apps.tasks.models import FINISHED, TaskExecution
from apps.tasks.services.executions import execution_live_message

Msg = dict[str, Any]


class Stream:
    groups: list[str]  # layer groups the stream receives
    markers: list[str] = []  # groups only listened (presence), never received
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
    """Delivers exactly the changes after its starting point (the client's cursor, or the newest one
    read after subscribing), each once. It is subscribed before `start` reads, so a change that
    commits meanwhile is both read and queued live: the live copy is dropped by id (`sent`), and so
    is anything at or below the starting point (the client has it already). A change committing
    after the read arrives live only (apps/core/live.py asks who listens after the commit)."""

    def __init__(self, principal: Principal) -> None:
        assert principal.recipient_pk is not None
        self.recipient_pk = principal.recipient_pk
        self.tenant_id = principal.tenant_id
        self.groups = [inbox.inbox_group(self.recipient_pk)]
        # Listened, never sent to: a fan-out chunk asks about its recipients' inboxes only if set.
        self.markers = [inbox.inboxes_tenant_group(self.tenant_id)]
        self.start_at = 0
        self.sent: dict[int, None] = {}  # ids sent, oldest first, at most `remember` of them
        self.remember = int(settings.SIGNALBOX_REALTIME["REPLAY_LIMIT"]) + int(
            settings.SIGNALBOX_REALTIME["QUEUE_LIMIT"]
        )
        self.counts_dirty = True

    async def start(self, cursor: int | None) -> list[Msg]:
        limit = int(settings.SIGNALBOX_REALTIME["REPLAY_LIMIT"])
        if cursor is None:  # where it starts and the counts there: one query
            self.start_at, counts = await database_sync_to_async(inbox.inbox_stream_start)(
                recipient_pk=self.recipient_pk, tenant_id=self.tenant_id
            )
            self.counts_dirty = False
            return [{"type": "ready", "id": self.start_at}, {"type": "inbox.counts", "data": counts}]
        missed = await database_sync_to_async(inbox.inbox_changes_since)(
            recipient_pk=self.recipient_pk, cursor=cursor, limit=limit + 1
        )
        if len(missed) > limit:
            raise Refused(409, "replay_too_long", "Too much was missed: reload the inbox over REST, then reconnect.")
        self.start_at = cursor
        for message in missed:
            self._sent(int(message["id"]))
        last = missed[-1]["id"] if missed else cursor
        return [*missed, {"type": "ready", "id": last}]

    async def live(self, message: Msg) -> list[Msg]:
        seq = int(message.get("id") or 0)
        if seq <= self.start_at or seq in self.sent:
            return []
        self._sent(seq)
        self.counts_dirty = True
        return [message]

    def _sent(self, seq: int) -> None:
        self.sent[seq] = None
        if len(self.sent) > self.remember:
            del self.sent[next(iter(self.sent))]

    async def after_batch(self) -> list[Msg]:
        if not self.counts_dirty:
            return []
        self.counts_dirty = False
        counts = await batcher().counts(self.recipient_pk, self.tenant_id)  # one query for many streams
        return [{"type": "inbox.counts", "data": counts}]


class StateStream(Stream):
    """A task's or a notification's state: the current one on (re)connect, then each newer one as
    pushed after commit by whoever changed it (`execution_live_changed`, `notification_live_changed`
    and the delivery records). Messages are numbered; one not newer than the last sent is dropped,
    so a live copy of the state just read at connect, or a late publish, is never sent twice or
    backwards. `refresh` re-reads the row: the slow safety net (STATE_REFRESH_SECONDS) for the few
    transitions that publish nothing (docs/realtime.md)."""

    refreshes = True
    final_statuses: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.last = 0

    def read(self) -> Msg | None:
        raise NotImplementedError

    async def start(self, cursor: int | None) -> list[Msg]:
        found = await database_sync_to_async(self.read)()
        if found is None:
            raise Refused(404, "not_found", "Not found.")
        self.last = cursor or 0  # a client that saw this state already is not sent it again
        sent = self._newer(found)
        self.final = found["data"]["status"] in self.final_statuses
        return sent

    async def live(self, message: Msg) -> list[Msg]:
        return self._newer(message)

    async def refresh(self) -> list[Msg]:
        found = await database_sync_to_async(self.read)()
        return self._newer(found) if found is not None else []

    kind = ""

    def _newer(self, message: Msg) -> list[Msg]:
        if message.get("type") != self.kind or int(message["id"]) <= self.last:
            return []
        self.last = int(message["id"])
        self.final = message["data"]["status"] in self.final_statuses
        return [message]


class TaskStream(StateStream):
    kind = "task.status"
    final_statuses = tuple(FINISHED)

    def __init__(self, principal: Principal, execution_id: str) -> None:
        super().__init__()
        self.tenant_id = principal.tenant_id
        self.execution_id = execution_id
        self.groups = [f"task.{execution_id}"]

    def exists(self) -> bool:
        return TaskExecution.objects.filter(pk=self.execution_id, tenant_id=self.tenant_id).exists()

    def read(self) -> Msg | None:
        row = TaskExecution.objects.filter(pk=self.execution_id, tenant_id=self.tenant_id).first()
        return execution_live_message(row) if row is not None else None


class NotificationStream(StateStream):
    kind = "notification.status"
    final_statuses = tuple(str(s) for s in NOTIFICATION_FINAL)

    def __init__(self, principal: Principal, notification_id: str) -> None:
        super().__init__()
        self.tenant_id = principal.tenant_id
        self.notification_id = notification_id
        self.groups = [notification_group(notification_id)]
        # Listened, never sent to: delivery records look up notifications only for such tenants.
        self.markers = [notifications_tenant_group(self.tenant_id)]

    def exists(self) -> bool:
        return Notification.objects.filter(pk=self.notification_id, tenant_id=self.tenant_id).exists()

    def read(self) -> Msg | None:
        return notification_live_state(notification_id=self.notification_id, tenant_id=self.tenant_id)


class ActivityStream(Stream):
    """Delivery status changes of the tenant, live only (for dashboards)."""

    def __init__(self, principal: Principal) -> None:
        self.groups = [f"tenant.{principal.tenant_id}"]
        self.sent = 0

    async def live(self, message: Msg) -> list[Msg]:
        self.sent += 1
        return [{**message, "id": self.sent}]
