"""Digests end to end through the real worker and PostgreSQL: collected per window, flushed into ONE
message per recipient and channel through the normal send pipeline, exactly once — even when two
flushes race or the worker flushing is killed mid-way."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from django.db import connection, connections
from django.utils import timezone

from apps.notifications.models import (
    Category,
    Delivery,
    DigestItem,
    DigestWindow,
    Notification,
    SinkRecord,
)
from apps.notifications.services.digests_flush import digest_window_flush, digests_flush_due
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from tests.conftest import wait_for

COMMENT_CONTENT = {
    "default": {
        "email": {"subject": "{{ author }} commented on post {{ post_id }}", "text": "{{ text }}"},
        "sms": {"text": "{{ author }}: {{ text }}"},
    }
}


def _send(tenant: Any, recipients: list[str], order_id: str, **extra: Any) -> Notification:
    return notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": order_id},
        recipients=recipients,
        channels=["email"],
        **extra,
    )


def _items(count: int, **filters: Any) -> list[DigestItem]:
    return wait_for(
        lambda: (items := list(DigestItem.objects.filter(**filters))) and len(items) >= count and items,
        timeout=30,
        message=f"{count} digest items",
    )


def _make_due(**filters: Any) -> None:
    """Time passes: the windows' end is now behind us."""
    DigestWindow.objects.filter(status="open", **filters).update(due_at=timezone.now() - timedelta(seconds=1))


def _records(external_id: str, count: int, timeout: float = 30) -> list[SinkRecord]:
    def found() -> list[SinkRecord] | None:
        rows = list(SinkRecord.objects.filter(to=f"{external_id}@example.com").order_by("id"))
        return rows if len(rows) >= count else None

    rows: list[SinkRecord] = wait_for(found, timeout=timeout, message=f"{count} messages to {external_id}")
    return rows


@pytest.mark.worker
def test_a_daily_digest_collects_notifications_and_sends_one_message_when_the_window_closes(
    worker, recording_tenant, make_template, make_recipients, prefer
):
    # Given a recipient in New York who prefers a daily digest, and one who wants everything at once
    make_template(default_channels=["email"])
    make_recipients(2, timezone="America/New_York")
    prefer("user-0", digest="daily")

    # When three notifications go to both
    for order in ("A-1", "A-2", "A-3"):
        _send(recording_tenant, ["user-0", "user-1"], order)

    # Then the immediate recipient has three emails, the digest recipient none yet
    assert len(_records("user-1", 3)) == 3
    items = _items(3, recipient__external_id="user-0")
    window = DigestWindow.objects.get()
    assert {item.window_id for item in items} == {window.pk} and window.status == "open"
    assert window.due_at.astimezone(ZoneInfo("America/New_York")).time() == dt_time(9, 0)
    assert timezone.now() < window.due_at <= timezone.now() + timedelta(days=1)
    # ...and flushing before the window's end sends nothing
    assert digests_flush_due() == {"windows": 0}
    time.sleep(0.5)
    assert not SinkRecord.objects.filter(to="user-0@example.com").exists()

    # When the window's end has passed and the flush runs
    _make_due()
    assert digests_flush_due() == {"windows": 1}

    # Then exactly one email lists the three notifications
    (digest,) = _records("user-0", 1)
    assert digest.message["subject"] == "3 new notifications"
    assert digest.message["text"] == "- Order A-1 shipped\n- Order A-2 shipped\n- Order A-3 shipped\n"
    window.refresh_from_db()
    assert (window.status, window.item_count) == ("sent", 3)
    digest_delivery = Delivery.objects.get(notification=window.notification)
    assert digest.delivery_id == str(digest_delivery.pk)
    # ...each item's delivery points at the digest that carried it
    originals = Delivery.objects.filter(pk__in=[i.delivery_id for i in items])
    assert {(d.status, d.provider, d.provider_message_id) for d in originals} == {
        ("sent", "digest", str(digest_delivery.pk))
    }
    assert DigestItem.objects.filter(flushed_at__isnull=True).count() == 0
    # ...and running the flush again sends nothing more
    assert digests_flush_due() == {"windows": 0}
    assert digest_window_flush(window_id=window.pk) == "skipped"
    time.sleep(0.5)
    assert SinkRecord.objects.filter(to="user-0@example.com").count() == 1


@pytest.mark.worker
def test_a_template_digest_rule_groups_by_key_and_lists_at_most_ten_items(
    worker, api, recording_tenant, make_recipients
):
    # Given a template that digests comments per post for ten minutes
    response = api.post(
        "/api/v1/templates/",
        {
            "key": "comment_added",
            "category": "comments",
            "variables": ["post_id", "author", "text"],
            "default_channels": ["email"],
            "content": COMMENT_CONTENT,
            "digest": {"key": "post-{{ post_id }}", "window_minutes": 10},
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["digest"] == {"key": "post-{{ post_id }}", "window_minutes": 10}
    make_recipients(1)

    # When twelve comments land on post 1 and two on post 2
    started = timezone.now()
    for n in range(12):
        body = {"author": f"ann{n}", "text": "hi", "post_id": 1}
        notification_create(tenant=recording_tenant, template="comment_added", payload=body, recipients=["user-0"])
    for n in range(2):
        body = {"author": f"bob{n}", "text": "yo", "post_id": 2}
        notification_create(tenant=recording_tenant, template="comment_added", payload=body, recipients=["user-0"])
    _items(14)

    # Then they wait in two windows that close ten minutes after their first comment
    windows = {w.group_key: w for w in DigestWindow.objects.all()}
    assert set(windows) == {"rule:comment_added:post-1", "rule:comment_added:post-2"}
    for window in windows.values():
        assert started + timedelta(minutes=10) <= window.due_at <= timezone.now() + timedelta(minutes=10)

    # When they close: one email per post, the long one listing ten and counting the rest
    _make_due()
    digests_flush_due()
    records = _records("user-0", 2)
    by_subject = {r.message["subject"]: r.message["text"] for r in records}
    assert set(by_subject) == {"12 new notifications", "2 new notifications"}
    long_list = by_subject["12 new notifications"].splitlines()
    assert long_list[:10] == [f"- ann{n} commented on post 1" for n in range(10)]
    assert long_list[10:] == ["and 2 more"]
    assert windows["rule:comment_added:post-1"].items.count() == 12


@pytest.mark.worker
def test_cancelled_items_are_left_out_and_an_empty_window_sends_nothing(
    worker, api, recording_tenant, make_template, make_recipients, prefer
):
    make_template(default_channels=["email"])
    make_recipients(2)
    prefer("user-0", digest="hourly")
    prefer("user-1", digest="hourly")
    kept = _send(recording_tenant, ["user-0"], "K-1")
    dropped = _send(recording_tenant, ["user-0", "user-1"], "D-1")
    _items(3)

    # When one notification is cancelled while its deliveries wait for the digest
    response = api.post(f"/api/v1/notifications/{dropped.pk}/cancel/")
    assert response.status_code == 200 and response.json()["deliveries_cancelled"] == 2

    _make_due()
    assert digests_flush_due() == {"windows": 2}

    # Then user-0's digest holds only the kept item, and user-1 (nothing left) gets nothing
    (digest,) = _records("user-0", 1)
    assert digest.message["subject"] == "1 new notification"
    assert "K-1" in digest.message["text"] and "D-1" not in digest.message["text"]
    empty = wait_for(lambda: DigestWindow.objects.filter(recipient__external_id="user-1", status="empty").first())
    assert empty.notification_id is None and empty.item_count == 0
    assert Delivery.objects.filter(notification=dropped, status="cancelled").count() == 2
    assert Delivery.objects.get(notification=kept).status == "sent"
    time.sleep(0.5)
    assert not SinkRecord.objects.filter(to="user-1@example.com").exists()


@pytest.mark.worker
def test_a_tenant_digest_template_and_quiet_hours_apply_to_the_digest(
    worker, recording_tenant, make_template, make_recipients, prefer
):
    # Given the tenant's own digest template for `orders`, and a recipient in quiet hours right now
    make_template(default_channels=["email"])
    make_template(
        "digest-orders",
        variables=["items", "count", "more", "frequency", "window"],
        content={"default": {"email": {"subject": "Your {{ count }} {{ frequency }} order updates", "text": "x"}}},
        default_channels=["email"],
    )
    make_recipients(2)
    prefer("user-0", digest="daily")
    now = timezone.now()
    prefer(
        "user-1",
        digest="daily",
        quiet_hours_start=(now - timedelta(hours=1)).time(),
        quiet_hours_end=(now + timedelta(hours=1)).time(),
    )
    _send(recording_tenant, ["user-0", "user-1"], "Q-1")
    _items(2)

    _make_due()
    digests_flush_due()

    # Then the template is used, and the quiet recipient's digest waits for the end of the window
    (digest,) = _records("user-0", 1)
    assert digest.message["subject"] == "Your 1 daily order updates"
    window = wait_for(lambda: DigestWindow.objects.filter(recipient__external_id="user-1", status="sent").first())
    deferred = Delivery.objects.get(notification=window.notification)
    assert deferred.status == "deferred"
    assert deferred.next_attempt_at is not None
    assert now + timedelta(minutes=59) <= deferred.next_attempt_at <= now + timedelta(hours=1, minutes=1)
    assert window.notification.category.key == "orders"


@pytest.mark.worker
def test_a_critical_category_is_never_digested(worker, recording_tenant, make_template, make_recipients, prefer):
    make_template("password_reset", category="security", default_channels=["email"])
    Category.objects.filter(tenant=recording_tenant, key="security").update(critical=True)
    make_recipients(1)
    prefer("user-0", digest="weekly")

    notification_create(
        tenant=recording_tenant,
        template="password_reset",
        payload={"order_id": "x"},
        recipients=["user-0"],
        digest={"key": "x", "window_minutes": 60},
    )

    assert len(_records("user-0", 1)) == 1
    assert not DigestItem.objects.exists()


@pytest.mark.worker
def test_a_worker_killed_mid_flush_loses_nothing_and_the_rerun_sends_exactly_one_digest(
    recording_tenant, make_template, make_recipients, prefer, own_digests_worker, worker
):
    # Given five deliveries waiting in one due window
    make_template(default_channels=["email"])
    make_recipients(1)
    prefer("user-0", digest="daily")
    for n in range(5):
        _send(recording_tenant, ["user-0"], f"K-{n}")
    items = _items(5)
    _make_due()
    window = DigestWindow.objects.get()
    flusher = own_digests_worker()

    # ...and another session holding one item row, so the flush stalls in the middle of its
    # transaction: window claimed, items' deliveries taken, items not yet closed
    db = connection.settings_dict
    blocker = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"] or "postgres", dbname=db["NAME"]
    )
    try:
        blocker.execute("SELECT 1 FROM notifications_digestitem WHERE id = %s FOR UPDATE", [items[-1].pk])
        (holder,) = blocker.execute("SELECT pg_backend_pid()").fetchone() or (None,)

        # When the flush runs in the test-owned worker and the worker is killed while stalled there
        from apps.notifications.tasks import digests_flush_windows

        digests_flush_windows.apply_async(([str(window.pk)],), queue="digests")

        def stalled() -> int | None:
            # Asked from another session: pg_stat_activity is a snapshot within the blocker's transaction.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [holder])
                row = cursor.fetchone()
            return row[0] if row else None

        backend = wait_for(stalled, timeout=30, message="the flush to stall mid-transaction")
        for pid in flusher.children():
            os.kill(pid, signal.SIGKILL)
        flusher.stop(signal.SIGKILL)
    finally:
        blocker.rollback()
        blocker.close()
    # The dead worker's session ends (its transaction rolls back) as soon as the server notices.
    wait_for(lambda: _backend_gone(backend), timeout=30, message="the killed worker's database session to end")

    # Then nothing was half-done: the window is open with every item, none sent
    window.refresh_from_db()
    assert window.status == "open" and window.notification_id is None
    assert DigestItem.objects.filter(window=window, flushed_at__isnull=True).count() == 5
    assert Delivery.objects.filter(status="digest").count() == 5
    assert not Notification.objects.filter(idempotency_key=f"digest:{window.pk}").exists()

    # When the flush runs again (the next beat tick: here, right away)
    assert digest_window_flush(window_id=window.pk) == "sent"

    # Then exactly one digest carries all five items, each counted once
    (digest,) = _records("user-0", 1)
    assert digest.message["subject"] == "5 new notifications"
    assert sorted(digest.message["text"].splitlines()) == [f"- Order K-{n} shipped" for n in range(5)]
    window.refresh_from_db()
    assert (window.status, window.item_count) == ("sent", 5)
    assert Notification.objects.filter(metadata__digest__window=str(window.pk)).count() == 1
    time.sleep(1)
    assert SinkRecord.objects.filter(to="user-0@example.com").count() == 1


def _backend_gone(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone()[0] == 0


@pytest.mark.worker
def test_two_flushes_of_one_window_at_once_send_one_digest(worker, tenant, make_template, make_recipients, prefer):
    make_template(default_channels=["email"])
    make_recipients(1)
    prefer("user-0", digest="hourly")
    _send(tenant, ["user-0"], "R-1")
    _items(1)
    _make_due()
    window = DigestWindow.objects.get()
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def flush() -> None:
        try:
            barrier.wait()
            outcomes.append(digest_window_flush(window_id=window.pk))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=flush) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["sent", "skipped"]
    assert Notification.objects.filter(idempotency_key=f"digest:{window.pk}").count() == 1
    assert Delivery.objects.filter(provider="digest").count() == 1
    wait_for(lambda: Notification.objects.filter(idempotency_key=f"digest:{window.pk}", status="completed").exists())


@pytest.mark.django_db
def test_an_item_late_for_a_flushed_window_goes_to_the_next_one(tenant, make_template, make_recipients, prefer):
    # Given a daily digest (09:00 UTC) whose window closed at 09:00 and was flushed
    make_template(default_channels=["email"])
    make_recipients(1)
    prefer("user-0", digest="daily")
    before = datetime(2030, 1, 15, 8, 0, tzinfo=UTC)
    first = _send(tenant, ["user-0"], "L-1")
    fanout_chunk_run(chunk_id=notification_fan_out(notification_id=first.pk)[0], now=before)
    window = DigestWindow.objects.get()
    assert window.due_at == datetime(2030, 1, 15, 9, 0, tzinfo=UTC)
    assert digest_window_flush(window_id=window.pk, now=window.due_at) == "sent"

    # When a fan-out that started at 08:59 (before the end) files its item only now
    late = _send(tenant, ["user-0"], "L-2")
    fanout_chunk_run(chunk_id=notification_fan_out(notification_id=late.pk)[0], now=before + timedelta(minutes=59))

    # Then it waits for the next day's digest instead of making a second one for the closed window
    item = DigestItem.objects.get(delivery__notification=late)
    assert item.window is not None and item.window_id != window.pk
    assert item.window.due_at == datetime(2030, 1, 16, 9, 0, tzinfo=UTC)
    assert item.window.window_key == "daily@2030-01-16T09:00:00Z"
    assert DigestWindow.objects.filter(window_key="daily@2030-01-15T09:00:00Z").count() == 1


@pytest.mark.django_db
def test_a_bad_digest_rule_is_refused_before_anything_is_written(tenant, api, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(1)
    response = api.post(
        "/api/v1/notifications/",
        {
            "template": "order_shipped",
            "payload": {"order_id": "1"},
            "recipients": ["user-0"],
            "digest": {"key": "{{ missing }}", "window_minutes": 5},
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"
    assert "missing" in response.json()["fields"]["digest"][0].lower()
    assert not Notification.objects.exists()
