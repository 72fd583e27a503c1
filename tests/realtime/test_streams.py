"""Live streams through real processes: uvicorn serving apps/realtime, the Redis channel layer and a
Celery worker doing the fan-out. Nothing lost, nothing doubled across a reconnect; others see nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from rest_framework.test import APIClient
from websockets.exceptions import ConnectionClosed

from apps.notifications.models import Delivery
from apps.tenancy.models import ApiKey
from tests.conftest import client_for, wait_for
from tests.realtime.conftest import receive_until, sse_events, valid

INBOX = "/api/v1/inbox/stream/"


def _token(api: Any, external_id: str) -> str:
    response = api.post(f"/api/v1/recipients/{external_id}/inbox-token/", {}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["token"]


def _key(client: Any) -> str:
    return str(client.api_key)


def _send(api: Any, order: str, recipients: list[str]) -> str:
    response = api.post(
        "/api/v1/notifications/",
        {"template": "order_shipped", "payload": {"order_id": order}, "recipients": recipients},
        format="json",
    )
    assert response.status_code == 202, response.json()
    return str(response.json()["id"])


def _ready(ws: Any) -> int:
    return int(receive_until(ws, lambda m: m["type"] == "ready")[-1]["id"])


def _items(ws: Any, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < n:
        got += [m for m in receive_until(ws, lambda m: m["type"] == "inbox.item") if m["type"] == "inbox.item"]
    return got


@pytest.fixture
def inbox_ready(api: Any, make_template: Any, make_recipients: Any) -> Any:
    make_template(default_channels=["in_app"])
    make_recipients(2)
    return api


def test_a_posted_notification_reaches_its_recipients_websocket_and_sse_and_nobody_else(
    worker: Any, start_realtime: Any, inbox_ready: Any
) -> None:
    api = inbox_ready
    server = start_realtime()
    mine, theirs = _token(api, "user-0"), _token(api, "user-1")
    with (
        server.ws(INBOX, token=mine) as ws,
        server.ws(INBOX, token=theirs) as other,
        server.sse(INBOX, headers={"Authorization": f"Recipient {mine}"}) as stream,
        server.ws("/api/v1/stream/activity/", key=api.api_key) as activity,
    ):
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        events = sse_events(stream.iter_lines())
        assert next(events)["event"] == "ready"
        _ready(ws), _ready(other)

        notification_id = _send(api, "A1", ["user-0"])

        [item] = _items(ws, 1)
        assert item["data"]["title"] == "Order A1 shipped" and item["data"]["read"] is False
        sse_item = next(e for e in events if e["event"] == "inbox.item")
        assert int(sse_item["id"]) == item["id"] and json.loads(sse_item["data"])["data"]["title"] == "Order A1 shipped"
        counts = receive_until(ws, lambda m: m["type"] == "inbox.counts")[-1]
        assert counts["data"]["unread"] == 1

        # A read made elsewhere (another tab) reaches this stream too, with a newer id.
        browser = APIClient()
        browser.credentials(HTTP_AUTHORIZATION=f"Recipient {mine}")
        read = browser.post(f"/api/v1/inbox/{item['data']['id']}/read/")
        assert read.status_code in (200, 204), read.content
        [changed] = _items(ws, 1)
        assert changed["data"]["id"] == item["data"]["id"] and changed["data"]["read"] is True
        assert changed["id"] > item["id"]

        # user-1's stream got no inbox item at all.
        with pytest.raises(TimeoutError):
            receive_until(other, lambda m: m["type"] == "inbox.item", timeout=1)

        # The tenant's dashboard saw the delivery; the notification's own stream ends once it is final.
        status = receive_until(activity, lambda m: m["type"] == "delivery.status")[-1]
        assert status["data"]["status"] == "delivered"
    with server.sse(f"/api/v1/notifications/{notification_id}/stream/", params={"key": api.api_key}) as response:
        states = list(sse_events(response.iter_lines()))
    assert json.loads(states[-2]["data"])["data"] == {"status": "completed", "channels": {"in_app": {"read": 1}}}
    assert states[-1]["event"] == "end" and json.loads(states[-1]["data"])["code"] == 1000


def test_a_reconnect_with_the_cursor_gets_exactly_the_missed_items_in_order_then_live_ones(
    worker: Any, start_realtime: Any, inbox_ready: Any
) -> None:
    api = inbox_ready
    server = start_realtime()
    token = _token(api, "user-0")
    with server.ws(INBOX, token=token) as ws:
        _ready(ws)
        _send(api, "B0", ["user-0"])
        cursor = _items(ws, 1)[0]["id"]

    for order in ("B1", "B2", "B3"):  # while disconnected
        _send(api, order, ["user-0"])
    wait_for(lambda: Delivery.objects.filter(channel="in_app", status="delivered").count() == 4)

    with server.ws(INBOX, token=token, cursor=cursor) as ws:
        replay = receive_until(ws, lambda m: m["type"] == "ready")
        items = [m for m in replay if m["type"] == "inbox.item"]
        # Exactly the three missed, each once, in cursor order (the order their fan-outs committed).
        assert sorted(m["data"]["title"] for m in items) == ["Order B1 shipped", "Order B2 shipped", "Order B3 shipped"]
        assert [m["id"] for m in items] == sorted({m["id"] for m in items}) and items[0]["id"] > cursor
        _send(api, "B4", ["user-0"])
        [live] = _items(ws, 1)
        assert live["data"]["title"] == "Order B4 shipped"


def test_a_tracked_tasks_progress_arrives_in_order_until_it_succeeds(
    worker: Any, start_realtime: Any, api: Any
) -> None:
    server = start_realtime()
    started = api.post(
        "/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 4, "delay": 0.3}}, format="json"
    )
    assert started.status_code == 202, started.json()
    task_id = started.json()["id"]
    with server.ws(f"/api/v1/tasks/{task_id}/stream/", key=api.api_key) as ws:
        seen: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                message = valid(json.loads(ws.recv(timeout=30)))
                if message["type"] == "task.status":
                    seen.append(message)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert [m["id"] for m in seen] == sorted(m["id"] for m in seen)
    assert seen[-1]["data"]["status"] == "succeeded" and seen[-1]["data"]["progress"]["current"] == 4
    currents = [m["data"]["progress"]["current"] for m in seen]
    assert currents == sorted(currents) and len(set(currents)) >= 2  # progress, not only the end


def test_revoked_tokens_and_keys_close_their_streams_and_others_are_refused(
    worker: Any, start_realtime: Any, inbox_ready: Any, tenant: Any, other_tenant: Any
) -> None:
    api = inbox_ready
    server = start_realtime()
    token = _token(api, "user-0")
    with server.ws(INBOX, token=token) as ws:
        _ready(ws)
        assert api.post("/api/v1/recipients/user-0/inbox-tokens/revoke/").status_code in (200, 204)
        with pytest.raises(ConnectionClosed) as closed:
            receive_until(ws, lambda m: False, timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

    # A token that expires under an open stream ends it on time (tokens are minted for >= 60 s, so
    # this one is signed by hand with the same claims and a 2-second life).
    from django.core import signing

    from apps.notifications.services.inbox import TOKEN_SALT

    claims = signing.loads(_token(api, "user-0"), salt=TOKEN_SALT)
    short = signing.dumps({**claims, "x": int(time.time()) + 2}, salt=TOKEN_SALT)
    with server.sse(INBOX, params={"token": short}) as stream:
        events = list(sse_events(stream.iter_lines()))
    assert events[0]["event"] == "ready"
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"])["code"] == 4001

    # A key revoked under an open activity stream ends it too.
    reader: Any = client_for(tenant, ["read"])
    with server.ws("/api/v1/stream/activity/", key=reader.api_key) as ws:
        ApiKey.objects.filter(prefix=reader.api_key.partition(".")[0]).update(revoked=True)
        with pytest.raises(ConnectionClosed) as closed:
            receive_until(ws, lambda m: False, timeout=15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001

    # Another tenant's key cannot follow this tenant's task; a key without the tasks scope cannot either.
    started = api.post("/api/v1/tasks/", {"name": "signalbox.testing.count", "input": {"steps": 1}}, format="json")
    task_path = f"/api/v1/tasks/{started.json()['id']}/stream/"
    with server.sse(task_path, headers={"Authorization": f"Bearer {_key(client_for(other_tenant))}"}) as response:
        assert response.status_code == 404
    read_only = _key(client_for(tenant, ["read"]))
    with server.sse(task_path, headers={"Authorization": f"Bearer {read_only}"}) as response:
        assert response.status_code == 403 and response.read() and response.json()["code"] == "permission_denied"
    with server.sse(
        task_path, headers={"Authorization": f"Bearer {api.api_key}", "Origin": "https://evil.example"}
    ) as response:
        assert response.status_code == 403 and response.read() and response.json()["code"] == "origin_not_allowed"


def test_a_stream_whose_redis_stops_closes_with_try_again_and_a_resume_loses_nothing(
    start_realtime: Any, inbox_ready: Any, tmp_path: Any
) -> None:
    from django.conf import settings
    from django.test import override_settings

    from apps.notifications.models import Recipient
    from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
    from apps.notifications.services.inbox import inbox_mark_read
    from apps.notifications.services.notifications import notification_create
    from tests.reliability.conftest import RedisServer

    api = inbox_ready
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    layers: Any = settings.CHANNEL_LAYERS
    layer: dict[str, Any] = {"default": dict(layers["default"])}
    hosts = [{**layers["default"]["CONFIG"]["hosts"][0], "address": redis_server.url}]
    layer["default"]["CONFIG"] = {**layer["default"]["CONFIG"], "hosts": hosts}
    try:
        with override_settings(
            CHANNEL_LAYERS=layer, SIGNALBOX_REALTIME={**settings.SIGNALBOX_REALTIME, "REDIS_URL": redis_server.url}
        ):
            server = start_realtime(SIGNALBOX_REALTIME_REDIS_URL=redis_server.url)
            tenant = Recipient.objects.get(external_id="user-0").tenant
            for order in ("C0", "C1", "C2"):
                notification = notification_create(
                    tenant=tenant, template="order_shipped", payload={"order_id": order}, recipients=["user-0"]
                )
                for chunk_id in notification_fan_out(notification_id=notification.pk):
                    fanout_chunk_run(chunk_id=chunk_id)
            wait_for(lambda: Delivery.objects.filter(channel="in_app", status="delivered").count() == 3)
            recipient = Recipient.objects.get(external_id="user-0")
            first, second, third = Delivery.objects.filter(channel="in_app").order_by("change_seq")
            token = _token(api, "user-0")

            with server.ws(INBOX, token=token) as ws, server.sse(INBOX, params={"token": token}) as stream:
                events = sse_events(stream.iter_lines())
                assert next(events)["event"] == "ready"
                _ready(ws)
                inbox_mark_read(recipient=recipient, ids=[first.pk])
                [read] = _items(ws, 1)
                assert read["data"]["id"] == str(first.pk) and read["data"]["read"] is True

                redis_server.stop()
                with pytest.raises(ConnectionClosed) as closed:
                    receive_until(ws, lambda m: False, timeout=15)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
                last = [e for e in events][-1]
                assert last["event"] == "reconnect" and json.loads(last["data"])["code"] == 1013

            # Changed while nobody could be told: the commit stands, the publish is dropped.
            assert inbox_mark_read(recipient=recipient, ids=[second.pk]) == 1

            redis_server.start()
            with server.ws(INBOX, token=token, cursor=read["id"]) as ws:
                replay = receive_until(ws, lambda m: m["type"] == "ready")
                items = [m for m in replay if m["type"] == "inbox.item"]
                assert [(m["data"]["id"], m["data"]["read"]) for m in items] == [(str(second.pk), True)]
                inbox_mark_read(recipient=recipient, ids=[third.pk])
                [live] = _items(ws, 1)
                assert live["data"]["id"] == str(third.pk) and live["id"] > items[0]["id"]
    finally:
        redis_server.stop()
