"""Push-driven streams: task and notification states arrive when they are committed (not at a poll),
in-app items the sender completes reach the inbox stream and its resume, the process re-checks
credentials in one batch, and the message schema is what the API serves."""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import httpx
import pytest
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed

from apps.notifications.models import Delivery, Notification
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.sending import deliveries_send
from apps.realtime.schema import message_schema
from apps.tasks.models import Status as TaskStatus
from apps.tasks.services.executions import (
    execution_create_for_intent,
    execution_mark_running,
    execution_mark_succeeded,
    execution_progress,
)
from tests.realtime.conftest import receive_until

INBOX = "/api/v1/inbox/stream/"
# The safety re-read is pushed far out: whatever arrives within the test came by push.
NO_POLL = {"SIGNALBOX_REALTIME_STATE_REFRESH_SECONDS": "120"}
PUSHED_WITHIN = 1.0  # seconds; the old poll interval was 2 s, the safety re-read here 120 s


def _token(api: Any, external_id: str) -> str:
    response = api.post(f"/api/v1/recipients/{external_id}/inbox-token/", {}, format="json")
    assert response.status_code == 201, response.json()
    return str(response.json()["token"])


@pytest.fixture
def inbox_ready(api: Any, make_template: Any, make_recipients: Any) -> Any:
    make_template(default_channels=["in_app"])
    make_recipients(2)
    return api


def test_a_notifications_counts_and_final_status_are_pushed_when_committed(
    start_realtime: Any, inbox_ready: Any, tenant: Any
) -> None:
    server = start_realtime(**NO_POLL)
    # The test drives the fan-out itself: the worker must not take it first (it would complete the
    # notification before the stream opens), so the fan-out task is not published.
    with mock.patch("apps.core.publish.publish"):
        notification = notification_create(
            tenant=tenant, template="order_shipped", payload={"order_id": "N1"}, recipients=["user-0", "user-1"]
        )
    with server.ws(f"/api/v1/notifications/{notification.pk}/stream/", key=inbox_ready.api_key) as ws:
        [first] = receive_until(ws, lambda m: m["type"] == "notification.status")
        assert first["data"] == {"status": "accepted", "channels": {}}

        chunks = notification_fan_out(notification_id=notification.pk)
        for chunk_id in chunks:
            fanout_chunk_run(chunk_id=chunk_id)  # in-app is delivered inline, then the notification completes
        committed = time.monotonic()
        states = receive_until(ws, lambda m: m["data"]["status"] == "completed", timeout=10)
        arrived = time.monotonic() - committed
        with pytest.raises(ConnectionClosed) as closed:
            receive_until(ws, lambda m: False, timeout=5)
    assert arrived < PUSHED_WITHIN, f"the final state took {arrived:.2f}s: polled, not pushed"
    assert states[-1]["data"] == {"status": "completed", "channels": {"in_app": {"delivered": 2}}}
    ids = [first["id"], *(m["id"] for m in states)]
    assert ids == sorted(set(ids))  # increasing, none twice
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert Notification.objects.get(pk=notification.pk).status == "completed"


def test_a_tasks_progress_and_end_are_pushed_when_committed(start_realtime: Any, api: Any, tenant: Any) -> None:
    server = start_realtime(**NO_POLL)
    execution = execution_create_for_intent(tenant=tenant, name="signalbox.testing.intent")
    assert execution_mark_running(execution_id=execution.pk)
    with server.ws(f"/api/v1/tasks/{execution.pk}/stream/", key=api.api_key) as ws:
        [first] = receive_until(ws, lambda m: m["type"] == "task.status")
        assert first["data"]["status"] == "running"
        lags = []
        for step in (1, 2, 3):
            written = time.monotonic()
            assert execution_progress(execution_id=execution.pk, current=step, total=3, message=f"step {step}")
            [state] = receive_until(ws, lambda m: m["type"] == "task.status", timeout=10)
            lags.append(time.monotonic() - written)
            assert state["data"]["progress"]["current"] == step and state["id"] > first["id"]
            first = state
        assert execution_mark_succeeded(execution_id=execution.pk, result={"ok": True})
        [last] = receive_until(ws, lambda m: m["type"] == "task.status", timeout=10)
        with pytest.raises(ConnectionClosed) as closed:
            receive_until(ws, lambda m: False, timeout=5)
    assert max(lags) < PUSHED_WITHIN, f"progress took up to {max(lags):.2f}s: polled, not pushed"
    assert last["data"]["status"] == TaskStatus.SUCCEEDED and last["data"]["progress"]["percent"] == 100.0
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_an_in_app_item_completed_by_the_sender_is_pushed_and_replayed_after_its_insert_cursor(
    start_realtime: Any, inbox_ready: Any, tenant: Any
) -> None:
    server = start_realtime()
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "S1"}, recipients=["user-0"]
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    # As a retried in-app delivery: back to queued (its cursor is still its insert's), so the
    # sender, not the fan-out, makes it visible.
    delivery = Delivery.objects.get(notification=notification, channel="in_app")
    Delivery.objects.filter(pk=delivery.pk).update(status="queued", read_at=None)
    token = _token(inbox_ready, "user-0")
    with server.ws(INBOX, token=token) as ws:
        cursor = int(receive_until(ws, lambda m: m["type"] == "ready")[-1]["id"])
        assert cursor >= (delivery.change_seq or 0)
        summary = deliveries_send(delivery_ids=[str(delivery.pk)])
        assert summary.statuses["delivered"] == 1
        [item] = [m for m in receive_until(ws, lambda m: m["type"] == "inbox.item") if m["type"] == "inbox.item"]
    assert item["data"]["id"] == str(delivery.pk) and item["data"]["title"] == "Order S1 shipped"
    assert item["id"] > cursor  # a new cursor: a client resuming from `cursor` replays it
    with server.ws(INBOX, token=token, cursor=cursor) as ws:
        replay = receive_until(ws, lambda m: m["type"] == "ready")
    assert [(m["data"]["id"], m["id"]) for m in replay if m["type"] == "inbox.item"] == [(str(delivery.pk), item["id"])]


def test_the_processs_batched_recheck_closes_only_the_revoked_streams(start_realtime: Any, inbox_ready: Any) -> None:
    server = start_realtime()  # AUTH_RECHECK_SECONDS 0.5 (conftest)
    revoked, kept = _token(inbox_ready, "user-0"), _token(inbox_ready, "user-1")
    with server.ws(INBOX, token=revoked) as gone, server.ws(INBOX, token=kept) as stays:
        receive_until(gone, lambda m: m["type"] == "ready")
        receive_until(stays, lambda m: m["type"] == "ready")
        assert inbox_ready.post("/api/v1/recipients/user-0/inbox-tokens/revoke/").status_code in (200, 204)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            receive_until(gone, lambda m: False, timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        assert time.monotonic() - started < 3  # within a few re-check periods
        # The other recipient's stream, checked in the same batch, goes on: heartbeats keep coming.
        for _ in range(3):
            assert json.loads(stays.recv(timeout=5))["type"] in ("heartbeat", "inbox.counts")


def test_the_message_schema_is_served_by_the_api_and_the_realtime_process_and_matches_the_models(
    start_realtime: Any, db: Any
) -> None:
    served = APIClient().get("/api/v1/realtime/schema/")
    assert served.status_code == 200 and served.json() == message_schema()
    server = start_realtime()
    assert httpx.get(f"http://127.0.0.1:{server.port}/api/v1/realtime/schema/").json() == message_schema()
    defs = message_schema()["$defs"]
    assert set(defs["task.status"]["properties"]["data"]["properties"]["status"]["enum"]) == set(TaskStatus.values)
    notification = defs["notification.status"]["properties"]["data"]["properties"]
    assert set(notification["status"]["enum"]) == set(Notification.Status.values)
    assert set(notification["channels"]["additionalProperties"]["propertyNames"]["enum"]) == set(Delivery.Status.values)
    assert set(defs["delivery.status"]["properties"]["data"]["properties"]["status"]["enum"]) == set(
        Delivery.Status.values
    )
    for stream in message_schema()["streams"].values():
        assert set(stream["messages"]) <= set(defs)
