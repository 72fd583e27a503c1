"""The seam between a stream's backlog and its live feed, with the race forced, not hoped for.

The realtime app runs here in this process (uvicorn in a thread, the real Redis layer), so a test
can wrap `InboxStream.start` — the step that reads the backlog, after the stream has subscribed —
and commit a change exactly where a connect and a commit could meet:

- *during*: the change commits after the stream subscribed and before it reads: it is both in the
  backlog and published live; the client must get it once.
- *straddling*: the writer's transaction is open (its change written, its publish pending) before
  the stream subscribes, and commits after the stream has read: it is not in the backlog, so it must
  come live. When publishers asked who listens inside their transaction, this change was lost until
  the next reconnect.

Each over WebSocket and SSE, resuming with a cursor and starting fresh without one; then a later
change must arrive live, and nothing in between twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from django.db import connection, connections, transaction
from websockets.sync.client import connect

from apps.notifications.models import Delivery, Recipient
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.inbox import inbox_mark_read
from apps.notifications.services.notifications import notification_create
from apps.realtime.streams import InboxStream
from project.asgi import application
from tests.realtime.conftest import receive_until, sse_events
from tests.reliability.conftest import free_port

INBOX = "/api/v1/inbox/stream/"


class InProcessRealtime:
    """project.asgi served by uvicorn in a thread of the test process (monkeypatches apply)."""

    def __init__(self) -> None:
        self.port = free_port()
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the in-process realtime server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def realtime_here(transactional_db: Any, monkeypatch: Any) -> Iterator[InProcessRealtime]:
    # The server's threads close their connections after each query, so none outlives the test.
    monkeypatch.setitem(connections.settings["default"], "CONN_MAX_AGE", 0)
    server = InProcessRealtime()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def inbox_of_three(
    api: Any, make_template: Any, make_recipients: Any, tenant: Any
) -> tuple[Recipient, list[Delivery], str]:
    """Three delivered in-app items of user-0 (fanned out here, inline), and a token for its inbox."""
    make_template(default_channels=["in_app"])
    make_recipients(1)
    for order in ("S0", "S1", "S2"):
        notification = notification_create(
            tenant=tenant, template="order_shipped", payload={"order_id": order}, recipients=["user-0"]
        )
        for chunk_id in notification_fan_out(notification_id=notification.pk):
            fanout_chunk_run(chunk_id=chunk_id)
    recipient = Recipient.objects.get(external_id="user-0")
    items = list(Delivery.objects.filter(recipient=recipient, channel="in_app").order_by("change_seq"))
    assert len(items) == 3 and all(d.status == "delivered" for d in items)
    response = api.post("/api/v1/recipients/user-0/inbox-token/", {}, format="json")
    assert response.status_code == 201, response.json()
    return recipient, items, str(response.json()["token"])


def _read_in_own_thread(recipient: Recipient, delivery: Delivery) -> None:
    """Marks the item read in its own transaction and connection (as another process would)."""

    def change() -> None:
        try:
            assert inbox_mark_read(recipient=recipient, ids=[delivery.pk]) == 1
        finally:
            connection.close()

    thread = threading.Thread(target=change)
    thread.start()
    thread.join(20)


class Straddling:
    """A writer whose transaction holds its change (and its pending publish) until released."""

    def __init__(self, recipient: Recipient, delivery: Delivery) -> None:
        self.written, self.release = threading.Event(), threading.Event()
        self.failed: list[BaseException] = []

        def write() -> None:
            try:
                with transaction.atomic():
                    assert inbox_mark_read(recipient=recipient, ids=[delivery.pk]) == 1
                    self.written.set()
                    assert self.release.wait(20)
            except BaseException as exc:  # reported by the test
                self.failed.append(exc)
                self.written.set()
            finally:
                connection.close()

        self.thread = threading.Thread(target=write)

    def open(self) -> None:
        self.thread.start()
        assert self.written.wait(20)

    def commit(self) -> None:
        self.release.set()
        self.thread.join(20)
        assert not self.failed, self.failed


def _wrap_start(monkeypatch: Any, before: Callable[[], None], after: Callable[[], None]) -> list[str]:
    """Runs `before` between the subscription and the backlog read, `after` right after the read."""
    original = InboxStream.start
    steps: list[str] = []

    async def start(self: InboxStream, cursor: int | None) -> Any:
        await asyncio.to_thread(before)
        steps.append("read")
        sent = await original(self, cursor)
        await asyncio.to_thread(after)
        return sent

    monkeypatch.setattr(InboxStream, "start", start)
    return steps


def _ws_items(server: InProcessRealtime, token: str, cursor: int | None, then: Callable[[], None]) -> list[Any]:
    """Inbox items (id, delivery id, read) until the one `then` makes arrives, with `ready` as a marker."""
    query = f"token={token}" + (f"&cursor={cursor}" if cursor is not None else "")
    with connect(f"ws://127.0.0.1:{server.port}{INBOX}?{query}", open_timeout=20) as ws:
        got: list[Any] = []
        for message in receive_until(ws, lambda m: m["type"] == "ready"):
            got.append(_entry(message))
        then()
        got += [_entry(m) for m in receive_until(ws, _is_final_change, timeout=15) if m["type"] == "inbox.item"]
    return [g for g in got if g is not None]


def _sse_items(server: InProcessRealtime, token: str, cursor: int | None, then: Callable[[], None]) -> list[Any]:
    headers = {"Authorization": f"Recipient {token}"}
    if cursor is not None:
        headers["Last-Event-ID"] = str(cursor)
    got: list[Any] = []
    with httpx.stream("GET", f"http://127.0.0.1:{server.port}{INBOX}", headers=headers, timeout=15) as response:
        assert response.status_code == 200
        for event in sse_events(response.iter_lines()):
            message = {"type": event["event"], "id": int(event["id"]) if event.get("id") else None}
            if event["event"] == "inbox.item":
                message["data"] = httpx.Response(200, content=event["data"]).json()["data"]
            got.append(_entry(message))
            if event["event"] == "ready":
                then()
            if event["event"] == "inbox.item" and _is_final_change(message):
                break
    return [g for g in got if g is not None]


FINAL_ID: dict[str, str] = {}  # the delivery whose change ends a test's reading


def _is_final_change(message: dict[str, Any]) -> bool:
    return message["type"] == "inbox.item" and message["data"]["id"] == FINAL_ID["id"] and message["data"]["read"]


def _entry(message: dict[str, Any]) -> Any:
    if message["type"] == "ready":
        return "ready"
    if message["type"] == "inbox.item":
        return (message["id"], message["data"]["id"], message["data"]["read"])
    return None


@pytest.mark.parametrize("transport", ["websocket", "sse"])
@pytest.mark.parametrize("resume", [True, False], ids=["cursor", "fresh"])
@pytest.mark.parametrize("race", ["during", "straddling"])
def test_a_change_committing_at_the_seam_arrives_exactly_once(
    realtime_here: InProcessRealtime,
    inbox_of_three: tuple[Recipient, list[Delivery], str],
    monkeypatch: Any,
    transport: str,
    resume: bool,
    race: str,
) -> None:
    recipient, (_, second, third), token = inbox_of_three
    FINAL_ID["id"] = str(third.pk)
    cursor = second.change_seq if resume else None  # the client has seen the first two, not the third
    straddling = Straddling(recipient, second)
    if race == "during":
        steps = _wrap_start(monkeypatch, before=lambda: _read_in_own_thread(recipient, second), after=lambda: None)
    else:
        steps = _wrap_start(monkeypatch, before=lambda: None, after=straddling.commit)
        straddling.open()  # written (its cursor taken) and uncommitted before the stream subscribes

    reads = _ws_items if transport == "websocket" else _sse_items
    got = reads(realtime_here, token, cursor, lambda: _read_in_own_thread(recipient, third))

    assert steps == ["read"]
    unread_third = (third.change_seq, str(third.pk), False)
    second.refresh_from_db()
    third.refresh_from_db()
    changed, final = (second.change_seq, str(second.pk), True), (third.change_seq, str(third.pk), True)
    assert int(unread_third[0] or 0) < int(changed[0] or 0) < int(final[0] or 0)
    if race == "during":
        # Committed before the read: in the backlog (a resume) or at or before the starting point
        # (fresh); either way its live copy, queued since the subscription, is dropped.
        expected = [unread_third, changed, "ready", final] if resume else ["ready", final]
    else:
        # Committed after the read: not in the backlog, so it comes live, right after `ready`.
        expected = [unread_third, "ready", changed, final] if resume else ["ready", changed, final]
    assert got == expected
