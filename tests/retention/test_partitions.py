"""Partitions across retention (PostgreSQL): deliveries and their attempts live in monthly partitions
keyed by UUIDv7 ids (apps/core/partitions.py). The job creates them ahead, an insert beyond them
lands in DEFAULT, the no-double-send guard holds across partitions, the hourly purge drops a
partition only when nothing in it must stay, and a tenant with a shorter retention is still purged
row by row inside a live partition."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.core.partitions import (
    default_partition_name,
    month_start,
    partition_name,
    partitions,
    partitions_ensure,
    rebuild_table,
    uuid7_floor,
)
from apps.core.retention_tasks import create_partitions_ahead, purge_expired_rows
from apps.notifications.models import Delivery, DeliveryAttempt, DigestItem, Notification

pytestmark = pytest.mark.django_db

DELIVERIES = Delivery._meta.db_table
ATTEMPTS = DeliveryAttempt._meta.db_table


def uuid7_at(moment: datetime) -> uuid.UUID:
    """A UUIDv7 made at `moment` (random below the timestamp and version bits)."""
    return uuid.UUID(int=uuid7_floor(moment).int | int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1))


def _names(table: str) -> set[str]:
    return {p.name for p in partitions(table)}


def _rows_in(partition: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {partition}")  # noqa: S608
        return int(cursor.fetchone()[0])


def _notifications_dropped(report: dict) -> dict[str, int]:
    """The deliveries' and attempts' partitions dropped (the events app's empty ones may go too)."""
    return {name: rows for name, rows in report["partitions"]["dropped"].items() if name.startswith("notif")}


def _partition_of(delivery: Delivery) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {DELIVERIES} WHERE id = %s", [delivery.pk])  # noqa: S608
        return str(cursor.fetchone()[0])


def _notification_made_at(build, moment: datetime, **fields) -> Notification:
    """A notification whose id says it was made at `moment` (so its deliveries' partition is that month)."""
    notification = build.notification(days_old=(timezone.now() - moment).total_seconds() / 86400, **fields)
    made = uuid7_at(moment)
    Notification.objects.filter(pk=notification.pk).update(id=made)
    return Notification.objects.get(pk=made)


def _deliveries_made_at(build, notification, statuses, moment: datetime, **fields) -> list[Delivery]:
    """Deliveries (one attempt each) whose ids, like production's, carry their creation time."""
    rows = build.deliveries(
        notification, statuses, days_old=(timezone.now() - moment).total_seconds() / 86400, **fields
    )
    made = []
    for row in rows:
        new_id = uuid7_at(moment)
        DeliveryAttempt.objects.filter(delivery_id=row.pk).delete()
        Delivery.objects.filter(pk=row.pk).update(id=new_id)
        DeliveryAttempt.objects.create(delivery_id=new_id, number=1, outcome="accepted", created_at=moment)
        made.append(Delivery.objects.get(pk=new_id))
    return made


def test_the_job_keeps_this_month_and_three_ahead_and_a_default_partition():
    later = timezone.now() + timedelta(days=400)

    created = create_partitions_ahead.run() + partitions_ensure(now=later)

    for add in range(4):
        assert partition_name(DELIVERIES, month_start(later, add=add)) in _names(DELIVERIES)
        assert partition_name(ATTEMPTS, month_start(later, add=add)) in _names(ATTEMPTS)
    assert default_partition_name(DELIVERIES) in _names(DELIVERIES)
    assert partition_name(DELIVERIES, month_start(later, add=3)) in created
    assert partitions_ensure(now=later) == []  # a second run (a second beat) creates nothing


def test_an_insert_beyond_the_partitions_lands_in_default_and_moves_when_its_month_is_created(build):
    far = timezone.now() + timedelta(days=3 * 365)
    notification = _notification_made_at(build, far, status="dispatched")

    (delivery,) = build.deliveries(notification, ["queued"], days_old=0)

    assert _partition_of(delivery) == default_partition_name(DELIVERIES)
    created = partitions_ensure(now=far, ahead=0)
    assert partition_name(DELIVERIES, month_start(far)) in created
    assert _partition_of(delivery) == partition_name(DELIVERIES, month_start(far))
    assert _rows_in(default_partition_name(DELIVERIES)) == 0
    assert Delivery.objects.get(pk=delivery.pk).status == "queued"


def test_a_rerun_inserts_nothing_twice_whatever_the_partition(build):
    old = timezone.now() - timedelta(days=70)
    partitions_ensure(now=old, ahead=0)
    for notification in (_notification_made_at(build, old), build.notification(days_old=0)):
        (first,) = build.deliveries(notification, ["sent"], days_old=0)
        again = Delivery(
            tenant_id=first.tenant_id, notification_id=first.notification_id, recipient_id=first.recipient_id,
            channel=first.channel, status="queued", created_at=timezone.now(),
        )  # fmt: skip

        # The fan-out's insert (ON CONFLICT DO NOTHING) skips it; a plain insert is refused.
        Delivery.objects.bulk_create([again], ignore_conflicts=True)
        with pytest.raises(IntegrityError), transaction.atomic():
            Delivery.objects.create(**{f.attname: getattr(again, f.attname) for f in Delivery._meta.concrete_fields})

        assert Delivery.objects.filter(notification=notification, recipient_id=first.recipient_id).count() == 1
        assert _partition_of(first) == partition_name(DELIVERIES, month_start(uuid7_time(notification.pk)))


def uuid7_time(value: uuid.UUID) -> datetime:
    return datetime.fromtimestamp((value.int >> 80) / 1000, tz=timezone.get_current_timezone())


def test_the_purge_drops_a_partition_past_every_retention_and_keeps_one_holding_a_row_in_flight(build):
    expired_month = month_start(timezone.now(), add=-9)  # past inbox_unread's 180 days, the longest
    kept_month = month_start(timezone.now(), add=-8)
    partitions_ensure(now=expired_month, ahead=1)
    at = expired_month + timedelta(days=2)
    gone = _deliveries_made_at(build, _notification_made_at(build, at), ["sent", "failed"], at)
    inbox = _deliveries_made_at(build, _notification_made_at(build, at), ["delivered"], at, channel="in_app")
    DigestItem.objects.create(
        tenant_id=gone[0].tenant_id, delivery=gone[0], recipient_id=gone[0].recipient_id,
        category=Notification.objects.get(pk=gone[0].notification_id).category, channel="email", frequency="daily",
    )  # fmt: skip
    at = kept_month + timedelta(days=2)
    kept_notification = _notification_made_at(build, at)
    finished = _deliveries_made_at(build, kept_notification, ["sent"], at)
    (in_flight,) = _deliveries_made_at(build, kept_notification, ["queued"], at)
    young = build.deliveries(build.notification(days_old=1), ["sent"], days_old=1)

    report = purge_expired_rows()

    expired = partition_name(DELIVERIES, expired_month)
    assert _notifications_dropped(report) == {expired: 3, partition_name(ATTEMPTS, expired_month): 3}
    assert report["partitions"]["cascaded"] == {"notifications.DigestItem": 1}
    assert partition_name(DELIVERIES, kept_month) in report["partitions"]["kept"]
    assert expired not in _names(DELIVERIES)
    assert not Delivery.objects.filter(pk__in=[d.pk for d in gone + inbox]).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id__in=[d.pk for d in gone + inbox]).exists()
    assert not DigestItem.objects.exists()
    # The partition still holding a queued delivery stays; its finished rows went by the batched DELETE.
    assert report["deleted"]["deliveries"] == 1
    assert not Delivery.objects.filter(pk=finished[0].pk).exists()
    assert Delivery.objects.get(pk=in_flight.pk).status == "queued"
    assert DeliveryAttempt.objects.filter(delivery_id=in_flight.pk).count() == 1
    assert Delivery.objects.filter(pk=young[0].pk).exists()


def test_a_tenant_with_a_longer_retention_keeps_the_partition(build, tenant):
    tenant.settings = {"retention_days": {"inbox_unread": 400}}
    tenant.save(update_fields=["settings"])
    month = month_start(timezone.now(), add=-9)
    partitions_ensure(now=month, ahead=0)
    at = month + timedelta(days=2)
    (sent,) = _deliveries_made_at(build, _notification_made_at(build, at), ["sent"], at)

    report = purge_expired_rows()

    assert _notifications_dropped(report) == {}
    assert partition_name(DELIVERIES, month) in _names(DELIVERIES)
    assert not Delivery.objects.filter(pk=sent.pk).exists()  # its own policy (deliveries, 30 days) still applies


def test_a_tenant_with_a_shorter_retention_is_purged_by_delete_inside_a_live_partition(build, tenant, other_tenant):
    tenant.settings = {"retention_days": {"deliveries": 3}}
    tenant.save(update_fields=["settings"])
    short = build.deliveries(build.notification(days_old=5), ["sent", "delivered"], days_old=5)
    theirs = build.deliveries(build.notification(days_old=5, for_tenant=other_tenant), ["sent"], days_old=5)
    live = partition_name(DELIVERIES, month_start(timezone.now()))
    assert {_partition_of(d) for d in short} == {live}

    report = purge_expired_rows()

    assert _notifications_dropped(report) == {}
    assert report["deleted"]["deliveries"] == 2
    assert not Delivery.objects.filter(pk__in=[d.pk for d in short]).exists()
    assert not DeliveryAttempt.objects.filter(delivery_id__in=[d.pk for d in short]).exists()
    assert Delivery.objects.filter(pk=theirs[0].pk).exists()


def test_a_dry_run_drops_nothing_and_says_what_would_go(build):
    month = month_start(timezone.now(), add=-9)
    partitions_ensure(now=month, ahead=0)
    at = month + timedelta(days=2)
    _deliveries_made_at(build, _notification_made_at(build, at), ["sent", "sent"], at)

    report = purge_expired_rows(dry_run=True)

    assert report["partitions"]["dropped"][partition_name(DELIVERIES, month)] == 2
    assert partition_name(DELIVERIES, month) in _names(DELIVERIES)
    assert _rows_in(partition_name(DELIVERIES, month)) == 2


def test_the_api_reads_deliveries_across_partitions(build, api):
    old = timezone.now() - timedelta(days=70)
    partitions_ensure(now=old, ahead=0)
    notification = _notification_made_at(build, old)
    (delivery,) = _deliveries_made_at(build, notification, ["sent"], old)
    (recent,) = build.deliveries(build.notification(days_old=0), ["sent"], days_old=0)
    assert _partition_of(delivery) != _partition_of(recent)

    one = api.get(f"/api/v1/deliveries/{delivery.pk}/")
    listed = api.get("/api/v1/deliveries/", {"notification": str(notification.pk)})
    everything = api.get("/api/v1/deliveries/")

    assert one.status_code == 200, one.content
    assert one.json()["id"] == str(delivery.pk)
    assert listed.status_code == 200, listed.content
    ids = {row["id"] for row in everything.json()["results"]}
    assert {str(delivery.pk), str(recent.pk)} <= ids
    assert [row["id"] for row in listed.json()["results"]] == [str(delivery.pk)]


def test_a_partition_whose_notification_is_still_fanning_out_stays(build):
    month = month_start(timezone.now(), add=-9)
    partitions_ensure(now=month, ahead=0)
    at = month + timedelta(days=2)
    _deliveries_made_at(build, _notification_made_at(build, at, status="fanning_out"), ["sent"], at)

    report = purge_expired_rows()

    assert partition_name(DELIVERIES, month) in report["partitions"]["kept"]
    assert _notifications_dropped(report) == {}
    assert partition_name(DELIVERIES, month) in _names(DELIVERIES)


def test_the_migration_rebuilds_a_table_with_rows_both_ways(build):
    old = timezone.now() - timedelta(days=70)
    partitions_ensure(now=old, ahead=0)
    rows = _deliveries_made_at(build, _notification_made_at(build, old), ["sent", "queued"], old)
    rows += build.deliveries(build.notification(days_old=0), ["sent"], days_old=0)
    last_attempt = DeliveryAttempt.objects.order_by("-id").values_list("id", flat=True)[0]
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # a table with pending checks cannot be dropped
        for table, key in ((ATTEMPTS, None), (DELIVERIES, None)):
            rebuild_table(cursor, table=table, pk="id", key=key, now=timezone.now())
        assert not partitions(DELIVERIES) and Delivery.objects.count() == len(rows)
        for table, key in ((DELIVERIES, "notification_id"), (ATTEMPTS, "delivery_id")):
            rebuild_table(cursor, table=table, pk="id", key=key, now=timezone.now())

    assert _partition_of(rows[0]) == partition_name(DELIVERIES, month_start(old))
    assert _partition_of(rows[2]) == partition_name(DELIVERIES, month_start(timezone.now()))
    assert {d.status for d in Delivery.objects.filter(pk__in=[d.pk for d in rows])} == {"sent", "queued"}
    again = DeliveryAttempt.objects.create(delivery_id=rows[2].pk, number=9, outcome="accepted")
    assert again.id > last_attempt  # the identity sequence carried on
    with pytest.raises(IntegrityError), transaction.atomic():
        Delivery.objects.create(
            tenant_id=rows[0].tenant_id, notification_id=rows[0].notification_id, recipient_id=rows[0].recipient_id,
            channel=rows[0].channel, status="queued",
        )  # fmt: skip
