"""The SQLite branches of the delivery pipeline, each run for the behaviour it exists for (docs/operations.md,
"The embedded default under test"). The pipeline is driven in-process, service by service, the way
the workers drive it; the end-to-end run through real workers is test_make_run.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import connection, connections, transaction
from django.utils import timezone

from apps.notifications.models import Delivery, DeliveryAttempt, DigestItem, DigestWindow, FanoutChunk, Notification
from apps.notifications.services import bulk, sending
from apps.notifications.services.fanout import _attempt_start, fanout_chunk_run, notification_fan_out
from tests.embedded.conftest import notify

Status = Delivery.Status


def fan_out(notification: Notification) -> list[int]:
    chunks = notification_fan_out(notification_id=notification.pk)
    for chunk_id in chunks:
        fanout_chunk_run(chunk_id=chunk_id)
    return chunks


def statuses(notification: Notification) -> dict[tuple[str, str], str]:
    rows = Delivery.objects.filter(notification=notification).values_list("recipient__external_id", "channel", "status")
    return {(r, c): s for r, c, s in rows}


def test_a_chunk_runs_once_and_inserts_its_deliveries_with_the_orm(tenant: Any, people: list[Any]):
    """fanout: no `SET LOCAL synchronous_commit` and no `FOR UPDATE SKIP LOCKED` in `_attempt_start`;
    bulk.deliveries_insert's ORM path; the in-app rows delivered inline."""
    notification = notify(tenant, people, channels=["email", "in_app"])
    (chunk_id,) = fan_out(notification)
    chunk = FanoutChunk.objects.get(pk=chunk_id)
    assert chunk.attempts == 1 and chunk.done_at is not None and chunk.dead_at is None
    found = statuses(notification)
    assert found == {
        **{(p.external_id, "email"): Status.QUEUED for p in people},
        **{(p.external_id, "in_app"): Status.DELIVERED for p in people},
    }
    # A chunk that is done is not run (nor counted) again.
    assert fanout_chunk_run(chunk_id=chunk_id) is None
    assert _attempt_start(chunk_id) is None
    assert FanoutChunk.objects.get(pk=chunk_id).attempts == 1
    assert Delivery.objects.filter(notification=notification).count() == 6


def test_deliveries_insert_skips_rows_that_exist_and_returns_only_the_new_ones(tenant: Any, people: list[Any]):
    """bulk.deliveries_insert without COPY/ON CONFLICT: a re-run chunk inserts nothing twice."""
    notification = notify(tenant, people, channels=["email"])
    now = timezone.now()

    def row(person: Any) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(), "tenant_id": tenant.pk, "notification_id": notification.pk,
            "recipient_id": person.pk, "channel": "email", "status": Status.QUEUED, "created_at": now,
        }  # fmt: skip

    with transaction.atomic():
        first = [row(people[0]), row(people[1])]
        assert bulk.deliveries_insert(first) == {r["id"] for r in first}
        again = [row(people[0]), row(people[2])]
        assert bulk.deliveries_insert(again) == {again[1]["id"]}
    assert Delivery.objects.filter(notification=notification).count() == 3
    assert not Delivery.objects.filter(pk=again[0]["id"]).exists()


def test_a_duplicate_within_the_dedup_window_is_suppressed(tenant: Any, people: list[Any]):
    """fanout._duplicates without the PostgreSQL advisory lock (SQLite serializes writers)."""
    first = notify(tenant, people[:2], channels=["in_app"], dedup_key="order-1")
    second = notify(tenant, people, channels=["in_app"], dedup_key="order-1")
    fan_out(first)
    fan_out(second)
    assert set(statuses(first).values()) == {Status.DELIVERED}
    found = statuses(second)
    assert found[(people[0].external_id, "in_app")] == found[(people[1].external_id, "in_app")] == Status.SUPPRESSED
    assert found[(people[2].external_id, "in_app")] == Status.DELIVERED


def test_sending_claims_keeps_the_lease_records_and_ends_the_claim(tenant: Any, people: list[Any]):
    """sending.deliveries_claim, deliveries_keep_lease and _end_claim, and bulk.deliveries_record and
    attempts_insert, through deliveries_send to the sink provider (no sandbox configured)."""
    notification = notify(tenant, people, channels=["email"])
    fan_out(notification)
    ids = list(Delivery.objects.filter(notification=notification).values_list("pk", flat=True))
    summary = sending.deliveries_send(delivery_ids=ids)
    assert summary.claimed == 3
    rows = Delivery.objects.filter(pk__in=ids)
    assert {(r.status, r.attempts, r.claim_token, r.in_flight_provider, r.lease_expires_at) for r in rows} == {
        (Status.SENT, 1, None, "", None)
    }
    assert all(r.provider and r.sent_at for r in rows)
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids, outcome="accepted").count() == 3
    # Sent rows are not `queued`: a second send of the same ids claims nothing and sends nothing.
    assert sending.deliveries_send(delivery_ids=ids).claimed == 0
    assert DeliveryAttempt.objects.filter(delivery_id__in=ids).count() == 3


def _queued(tenant: Any, people: list[Any]) -> list[Any]:
    notification = notify(tenant, people, channels=["email"])
    fan_out(notification)
    return list(Delivery.objects.filter(notification=notification).values_list("pk", flat=True))


def in_threads(count: int, fn: Callable[[int], Any]) -> list[Any]:
    """`fn(n)` in `count` threads started together, each on its own database connection."""
    barrier, results, errors = threading.Barrier(count), [None] * count, []

    def run(n: int) -> None:
        try:
            barrier.wait()
            results[n] = fn(n)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    return results


def test_concurrent_claims_of_the_same_ids_win_each_row_exactly_once(
    transactional_db: Any, tenant: Any, people: list[Any]
):
    """deliveries_claim's SQLite path (select_for_update is a no-op there): the IMMEDIATE transaction
    and the `status = 'queued'` re-check make one claimer win each row."""
    ids = _queued(tenant, people)
    won = in_threads(4, lambda n: sending.deliveries_claim(delivery_ids=ids))
    claimed = [c.id for claims in won for c in claims]
    assert sorted(map(str, claimed)) == sorted(map(str, ids))
    tokens = {r.claim_token for r in Delivery.objects.filter(pk__in=ids)}
    assert None not in tokens
    assert {(r.status, r.attempts) for r in Delivery.objects.filter(pk__in=ids)} == {(Status.SENDING, 1)}


def test_the_lease_is_kept_only_on_rows_the_claim_still_holds(tenant: Any, people: list[Any]):
    """deliveries_keep_lease's SQLite path: a row the sweeper took back is neither renewed nor sent."""
    ids = _queued(tenant, people)
    token = uuid.uuid4()
    sending.deliveries_claim(delivery_ids=ids, token=token)
    taken_back = ids[0]
    Delivery.objects.filter(pk=taken_back).update(status=Status.QUEUED, claim_token=None, lease_expires_at=None)
    later = timezone.now() + timedelta(minutes=5)
    kept = sending.deliveries_keep_lease(token=token, delivery_ids=ids, provider="sink", now=later)
    assert kept == {str(pk) for pk in ids[1:]}
    rows = {r.pk: r for r in Delivery.objects.filter(pk__in=ids)}
    for pk in ids[1:]:
        lease = rows[pk].lease_expires_at
        assert rows[pk].in_flight_provider == "sink" and lease is not None and lease > later
    assert rows[taken_back].in_flight_provider == "" and rows[taken_back].lease_expires_at is None
    assert sending.deliveries_keep_lease(token=uuid.uuid4(), delivery_ids=ids) == set()


def test_ending_a_claim_touches_only_its_own_rows(tenant: Any, people: list[Any]):
    """sending._end_claim's SQLite path: the token goes on the rows held; `in_flight_provider` is
    cleared only on rows that got a definite answer; another claim's row is untouched."""
    ids = _queued(tenant, people)
    token = uuid.uuid4()
    sending.deliveries_claim(delivery_ids=ids, token=token)
    sending.deliveries_keep_lease(token=token, delivery_ids=ids, provider="sink")
    other = uuid.uuid4()
    Delivery.objects.filter(pk=ids[2]).update(claim_token=other)
    with transaction.atomic():
        owned = sending._end_claim(token, [str(pk) for pk in ids], settled=[str(ids[0])])
    assert owned == {str(ids[0]), str(ids[1])}
    rows = {r.pk: r for r in Delivery.objects.filter(pk__in=ids)}
    assert (rows[ids[0]].claim_token, rows[ids[0]].in_flight_provider) == (None, "")
    assert (rows[ids[1]].claim_token, rows[ids[1]].in_flight_provider) == (None, "sink")  # answer unknown
    assert (rows[ids[2]].claim_token, rows[ids[2]].in_flight_provider) == (other, "sink")


def test_deliveries_record_writes_only_rows_still_sending_under_the_claim(tenant: Any, people: list[Any]):
    """bulk.deliveries_record's ORM path: guarded by `sending` and the token; a None in
    KEEP_IF_NULL keeps the stored value."""
    ids = _queued(tenant, people)
    token = uuid.uuid4()
    sending.deliveries_claim(delivery_ids=ids, token=token)
    Delivery.objects.filter(pk=ids[0]).update(provider_message_id="earlier")
    Delivery.objects.filter(pk=ids[2]).update(status=Status.QUEUED)  # the sweeper took it back
    now = timezone.now()
    outcome = {"status": Status.SENT, "provider": "sink", "sent_at": now, "provider_message_id": None}
    with transaction.atomic():
        written = bulk.deliveries_record([{"id": pk, **outcome} for pk in ids], claim_token=token)
    assert sorted(map(str, written)) == sorted(map(str, ids[:2]))
    rows = {r.pk: r for r in Delivery.objects.filter(pk__in=ids)}
    assert (rows[ids[0]].status, rows[ids[0]].provider_message_id, rows[ids[0]].claim_token) == (
        Status.SENT, "earlier", None,
    )  # fmt: skip
    assert rows[ids[1]].status == Status.SENT and rows[ids[1]].sent_at == now
    assert rows[ids[2]].status == Status.QUEUED and rows[ids[2]].sent_at is None


def test_held_deliveries_go_back_to_pending_without_spending_the_attempt(tenant: Any, people: list[Any]):
    """ratelimits.deliveries_hold's ORM path (no unnest): only rows still `sending` are held."""
    from apps.notifications.services.ratelimits import Held, deliveries_hold

    ids = _queued(tenant, people)
    sending.deliveries_claim(delivery_ids=ids)
    Delivery.objects.filter(pk=ids[2]).update(status=Status.SENT)
    until = timezone.now() + timedelta(seconds=30)
    held = [Held(id=pk, channel="email", until=until, reason="provider_rate", detail="slow down") for pk in ids]
    assert deliveries_hold(held) == 2
    rows = {r.pk: r for r in Delivery.objects.filter(pk__in=ids)}
    for pk in ids[:2]:
        r = rows[pk]
        assert (r.status, r.attempts, r.next_attempt_at, r.error_code, r.last_error, r.lease_expires_at) == (
            Status.PENDING, 0, until, "held_provider_rate", "slow down", None,
        )  # fmt: skip
    assert rows[ids[2]].status == Status.SENT and rows[ids[2]].attempts == 1


def test_an_inbox_change_takes_the_next_cursor_value(tenant: Any, people: list[Any]):
    """inbox.next_change_seq's SQLite expression (one past the largest): a read moves the row to
    the end of the live stream's order."""
    from apps.notifications.services.inbox import inbox_changes_since, inbox_cursor_now, inbox_mark_read

    notification = notify(tenant, people, channels=["in_app"])
    fan_out(notification)
    ada = people[0]
    row = Delivery.objects.get(notification=notification, recipient=ada)
    cursor = inbox_cursor_now(recipient_pk=ada.pk)
    largest = max(s for s in Delivery.objects.values_list("change_seq", flat=True) if s is not None)
    assert inbox_mark_read(recipient=ada, ids=[row.pk]) == 1
    row.refresh_from_db()
    assert row.read_at is not None and row.change_seq == largest + 1
    changes = inbox_changes_since(recipient_pk=ada.pk, cursor=cursor, limit=10)
    assert [c["id"] for c in changes] == [largest + 1]


def test_digest_items_of_one_group_collect_in_one_window(tenant: Any, people: list[Any]):
    """digest._advisory_lock is a no-op on SQLite (writers are serialized): two notifications with one
    digest key still open one window per recipient and channel, holding both items."""
    rule = {"key": "post-1", "window_minutes": 10}
    notifications = [notify(tenant, people[:2], channels=["email"], digest=rule) for _ in range(2)]
    for n in notifications:
        fan_out(n)
        assert set(statuses(n).values()) == {Status.DIGEST}
    windows = DigestWindow.objects.filter(status=DigestWindow.Status.OPEN)
    assert windows.count() == 2
    assert {w.pk: DigestItem.objects.filter(window=w).count() for w in windows} == {w.pk: 2 for w in windows}


def test_a_cancel_stops_a_chunk_that_has_not_run(tenant: Any, people: list[Any]):
    """notification_lock is a no-op on SQLite: cancelling between planning and the chunk's run still
    leaves no delivery to send."""
    from apps.notifications.services.notifications import notification_cancel

    notification = notify(tenant, people, channels=["email", "in_app"])
    (chunk_id,) = notification_fan_out(notification_id=notification.pk)
    notification.refresh_from_db()
    notification_cancel(notification=notification)
    result = fanout_chunk_run(chunk_id=chunk_id)
    assert result is not None and result.cancelled
    assert not Delivery.objects.filter(notification=notification).exclude(status=Status.CANCELLED).exists()
    assert Notification.objects.get(pk=notification.pk).status == Notification.Status.CANCELLED


def test_the_database_really_is_sqlite_here(db: Any):
    assert connection.vendor == "sqlite"
