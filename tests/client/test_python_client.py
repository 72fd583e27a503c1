"""The Python client (clients/python) against the real API on a live server, and a real worker where a
task must run: keys, automatic Idempotency-Keys kept across retries, errors as exceptions, pagination,
`tasks.wait` with ETag/304, inbox tokens, webhook verification, and the async client."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from apps.notifications.models import Notification
from tests.client.conftest import Wire

pytestmark = pytest.mark.django_db(transaction=True)

IN_APP = {"in_app": {"title": "Hello {{ name }}", "body": "Your order shipped."}}
ADA = {"external_id": "ada", "name": "Ada", "email": "ada@example.com"}


def _send(sb: Any, **extra: Any) -> Any:
    return sb.notifications.send(content=IN_APP, payload={"name": "Ada"}, recipients=[ADA], **extra)


def test_send_retries_a_lost_answer_with_the_same_idempotency_key_and_creates_one_notification(
    sb: Any, wire: Wire, monkeypatch: pytest.MonkeyPatch
):
    # Given: the first answer to the create is lost (503 after the server made the notification).
    wire.fail(lambda r: r.method == "POST" and r.url.path == "/api/v1/notifications/", retry_after="0.05")
    slept: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        if threading.current_thread() is threading.main_thread():  # not the live server's threads
            slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr("signalbox.client.time.sleep", sleep)

    accepted = _send(sb)

    posts = wire.requests("POST", "/api/v1/notifications/")
    assert [p.status for p in posts] == [503, 202]
    keys = {p.headers["idempotency-key"] for p in posts}
    assert len(keys) == 1 and keys != {""}  # one key, made by the client, reused by the retry
    assert slept == [0.05]  # the Retry-After, not the client's own backoff
    (notification,) = Notification.objects.all()
    assert str(notification.pk) == accepted["id"] and notification.idempotency_key == keys.pop()
    assert sb.notifications.get(accepted["id"])["id"] == accepted["id"]
    # A second logical call gets a key of its own: a second notification.
    _send(sb)
    assert Notification.objects.count() == 2


def test_a_post_without_idempotency_is_not_repeated_after_a_5xx(sb: Any, wire: Wire):
    from signalbox import ServerError

    accepted = _send(sb)
    wire.fail(lambda r: r.url.path.endswith("/cancel/"))

    with pytest.raises(ServerError) as refused:
        sb.notifications.cancel(accepted["id"])

    assert refused.value.status == 503 and refused.value.code == "service_unavailable"
    assert len(wire.requests("POST", f"/api/v1/notifications/{accepted['id']}/cancel/")) == 1


def test_errors_are_exceptions_with_code_message_and_fields(sb: Any, wire: Wire):
    from signalbox import Conflict, NotFound, SignalboxError, Unprocessable, ValidationError

    with pytest.raises(NotFound) as missing:
        sb.notifications.get(str(uuid.uuid4()))
    assert (missing.value.status, missing.value.code) == (404, "not_found")

    with pytest.raises(ValidationError) as invalid:
        sb.recipients.create("has space", email="not-an-email")
    assert invalid.value.status == 400 and invalid.value.code == "validation_error"
    assert set(invalid.value.fields) == {"external_id", "email"}

    sb.recipients.create("grace", email="grace@example.com")
    with pytest.raises(Conflict) as taken:
        sb.recipients.create("grace")
    assert taken.value.code == "recipient_exists" and "external_id" in taken.value.fields

    with pytest.raises(Unprocessable) as reserved:
        sb.events.emit("task.finished", {"x": 1})
    assert reserved.value.code == "reserved_event_type"
    assert sb.events.emit("order.paid", {"order": "A-1"})["type"] == "order.paid"

    assert all(isinstance(e.value, SignalboxError) for e in (missing, invalid, taken, reserved))
    # A refusal is final: nothing was retried.
    assert len(wire.requests("POST", "/api/v1/recipients/")) == 3


def test_upsert_creates_then_updates_and_iterate_walks_every_page(sb: Any, wire: Wire):
    created = sb.recipients.upsert("user-00", name="First")
    updated = sb.recipients.upsert("user-00", name="Second", locale="fr-CA")
    assert created["name"] == "First" and (updated["name"], updated["locale"]) == ("Second", "fr-CA")
    for i in range(1, 7):
        sb.recipients.create(f"user-{i:02}")

    ids = [r["external_id"] for r in sb.recipients.iterate(limit=3)]

    assert ids == [f"user-{i:02}" for i in range(7)]
    assert len(wire.requests("GET", "/api/v1/recipients/")) == 3  # 3 + 3 + 1
    first = sb.recipients.list(limit=3)
    assert first.count == 7 and len(first.results) == 3 and first.next_params == {"limit": "3", "offset": "3"}


def test_wait_revalidates_with_the_etag_and_times_out_on_a_task_that_does_not_finish(sb: Any, wire: Wire):
    from signalbox import WaitTimeout

    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    task = sb.tasks.start("signalbox.testing.count", {"steps": 1}, scheduled_at=later)

    with pytest.raises(WaitTimeout) as waited:
        sb.tasks.wait(task["id"], timeout=1.5, poll_interval=0.2)

    polls = wire.requests("GET", f"/api/v1/tasks/{task['id']}/")
    assert polls[0].status == 200 and "if-none-match" not in polls[0].headers
    assert {p.status for p in polls[1:]} == {304}  # unchanged: no body sent again
    assert len(polls) >= 2
    assert waited.value.task["status"] == "queued" and waited.value.task["id"] == task["id"]
    assert sb.tasks.cancel(task["id"])["status"] == "cancelled"


@pytest.mark.worker
def test_wait_follows_a_task_to_success_on_a_real_worker(sb: Any, worker: Any):
    task = sb.tasks.start("signalbox.testing.count", {"steps": 2})
    assert task["status"] == "queued"

    done = sb.tasks.wait(task["id"], timeout=30, poll_interval=0.1)

    assert done["status"] == "succeeded" and done["result"]["counted"] == 2
    assert [t["id"] for t in sb.tasks.iterate(limit=1)] == [task["id"]]


def test_an_inbox_token_opens_that_recipients_inbox(sb: Any, live_server: Any):
    sb.recipients.create("ada")

    minted = sb.inbox_tokens.mint("ada", ttl_seconds=600)

    assert minted["recipient"] == "ada" and minted["token"]
    inbox = httpx.get(f"{live_server.url}/api/v1/inbox/", headers={"Authorization": f"Recipient {minted['token']}"})
    assert inbox.status_code == 200, inbox.text


def test_webhook_verify_accepts_the_platforms_signature_and_refuses_tampering(sb: Any):
    from signalbox import WebhookVerificationError, verify_webhook

    from apps.core.signing import secret_generate, signed_headers

    old, new = secret_generate(), secret_generate()
    body = '{"type": "notification.delivered", "data": {"id": "n-1"}}'
    headers = signed_headers(secrets=[old, new], msg_id="msg_1", body=body)  # mid-rotation: two signatures

    assert sb.webhooks.verify(body, headers, new) == {"type": "notification.delivered", "data": {"id": "n-1"}}
    assert verify_webhook(body.encode(), {k.upper(): v for k, v in headers.items()}, old)["data"] == {"id": "n-1"}
    with pytest.raises(WebhookVerificationError) as tampered:
        verify_webhook(body.replace("n-1", "n-2"), headers, new)
    assert tampered.value.code == "invalid_signature"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, secret_generate())
    stale = signed_headers(secrets=[new], msg_id="msg_1", body=body, now=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, stale, new)


@pytest.mark.worker
def test_the_async_client_sends_iterates_and_waits(async_sb: Any, wire: Wire, worker: Any):
    async def story() -> tuple[list[Any], list[str], Any]:
        async with async_sb() as sb:
            wire.fail(lambda r: r.method == "POST" and r.url.path == "/api/v1/notifications/", retry_after="0")
            sent = [await _send_async(sb, i) for i in range(3)]
            listed = [n["id"] async for n in sb.notifications.iterate(limit=2)]
            task = await sb.tasks.start("signalbox.testing.count", {"steps": 1})
            return sent, listed, await sb.tasks.wait(task["id"], timeout=30, poll_interval=0.1)

    sent, listed, done = asyncio.run(story())

    assert Notification.objects.count() == 3  # the lost first answer was retried, not created twice
    assert sorted(listed) == sorted(s["id"] for s in sent)
    assert len(wire.requests("GET", "/api/v1/notifications/")) == 2
    assert done["status"] == "succeeded"


async def _send_async(sb: Any, i: int) -> Any:
    return await sb.notifications.send(content=IN_APP, payload={"name": f"N{i}"}, recipients=[ADA])
