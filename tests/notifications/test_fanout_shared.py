"""In-app rows built by PostgreSQL from arrays (`SharedRows`, `deliveries_insert_shared`): the same
rows the COPY path writes for the same input, each (notification, recipient, channel) once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from apps.notifications.models import Delivery, Notification, Preference, Recipient, Topic
from apps.notifications.services.announce import Audience
from apps.notifications.services.fanout import (
    RECIPIENT_FIELDS,
    ChunkResult,
    chunk_context,
    chunk_count,
    chunk_decide,
    chunk_write,
    fanout_chunk_run,
    notification_fan_out,
)
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.recipients import topic_subscribe

pytestmark = pytest.mark.django_db

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
# Columns that differ between two notifications by construction (or are assigned by the database).
OWN = {"id", "notification", "provider_message_id", "change_seq"}


@pytest.fixture
def shared_min(settings):
    def set_min(n: int) -> None:
        settings.SIGNALBOX_NOTIFICATIONS = {**settings.SIGNALBOX_NOTIFICATIONS, "FANOUT_SHARED_ROWS_MIN": n}

    return set_min


def _notification(tenant: Any, external_ids: list[str]) -> Notification:
    created = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "7"}, recipients=external_ids
    )
    return Notification.objects.select_related("tenant", "category", "template", "template_version").get(pk=created.pk)


def _recipients(tenant: Any, external_ids: list[str]) -> list[Any]:
    rows = Recipient.objects.filter(tenant=tenant, external_id__in=external_ids).order_by("pk")
    return list(rows.values_list(*RECIPIENT_FIELDS, named=True))


def _run(notification: Notification, tenant: Any, external_ids: list[str]) -> tuple[Any, set[Any], ChunkResult]:
    context = chunk_context(notification, _recipients(tenant, external_ids), NOW)
    decisions = chunk_decide(context)
    inserted = chunk_write(context, decisions, Audience())
    result = ChunkResult(chunk_id=0)
    chunk_count(decisions, inserted, result)
    return decisions, inserted, result


def _rows(notification: Notification) -> dict[tuple[str, str], dict[str, Any]]:
    fields = [f.attname for f in Delivery._meta.concrete_fields]
    return {
        (row["recipient_id"], row["channel"]): {
            k: v for k, v in row.items() if k not in OWN and k.removesuffix("_id") not in OWN
        }
        for row in Delivery.objects.filter(notification=notification).values(*fields)
    }


def test_shared_rows_are_the_rows_the_copy_path_writes(tenant, make_template, make_recipients, shared_min):
    # Given recipients in two locales, one unsubscribed, one with in-app turned off, and email beside
    make_template(default_channels=["email", "in_app"])
    recipients = make_recipients(6)
    ids = [r.external_id for r in recipients]
    Recipient.objects.filter(tenant=tenant, external_id__in=ids[:2]).update(locale="fr")
    Recipient.objects.filter(tenant=tenant, external_id=ids[2]).update(unsubscribed_at=NOW)
    Preference.objects.create(tenant=tenant, recipient=recipients[3], channels={"in_app": False})

    # When one notification's chunk builds its in-app rows from arrays and the same one's the COPY way
    shared_min(1)
    shared = _notification(tenant, ids)
    decisions, inserted, shared_result = _run(shared, tenant, ids)
    assert len(decisions.shared["in_app"].ids) == 4 and len(decisions.shared["in_app"].tails) == 2
    shared_min(10**9)
    copied = _notification(tenant, ids)
    decisions, _, copied_result = _run(copied, tenant, ids)
    assert not decisions.shared.get("in_app")

    # Then every column of every row is the same, the message id is the row's id, and so are the counts
    assert _rows(shared) == _rows(copied)
    assert len(_rows(shared)) == 12 and len(inserted) == 12
    in_app = Delivery.objects.filter(notification=shared, channel="in_app", status="delivered")
    assert in_app.count() == 4
    assert all(row.provider_message_id == str(row.pk) for row in in_app)
    assert {(row.rendered or {}).get("locale") for row in in_app} == {"fr", "default"}
    assert shared_result.statuses == copied_result.statuses
    assert shared_result.queued.keys() == copied_result.queued.keys() == {"email"}


def test_shared_rows_take_inbox_cursors_in_recipient_order(tenant, make_template, make_recipients, shared_min):
    make_template(default_channels=["in_app"])
    ids = [r.external_id for r in make_recipients(30)]
    shared_min(1)
    notification = _notification(tenant, ids)

    _run(notification, tenant, ids)

    by_cursor = list(Delivery.objects.filter(notification=notification).order_by("change_seq"))
    assert [d.recipient_id for d in by_cursor] == sorted(d.recipient_id for d in by_cursor)
    assert [d.pk for d in by_cursor] == sorted(d.pk for d in by_cursor)  # ids in creation order, as with COPY


def test_a_re_run_of_shared_rows_writes_nothing_twice(tenant, make_template, make_recipients, shared_min):
    make_template(default_channels=["email", "in_app"])
    ids = [r.external_id for r in make_recipients(5)]
    shared_min(1)
    notification = _notification(tenant, ids)
    _, first, _ = _run(notification, tenant, ids)
    assert len(first) == 10

    # The whole chunk again: nothing goes in, nothing is counted
    _, again, result = _run(notification, tenant, ids)
    assert again == set() and sum(result.statuses.values()) == 0 and not result.queued
    assert Delivery.objects.filter(notification=notification).count() == 10

    # One in-app row missing (as if its recipient's row had never been written): only it goes in
    missing = Delivery.objects.filter(notification=notification, channel="in_app").order_by("pk").first()
    assert missing is not None
    missing.delete()
    _, partial, result = _run(notification, tenant, ids)
    assert len(partial) == 1 and dict(result.statuses) == {"delivered": 1}
    rows = Delivery.objects.filter(notification=notification)
    assert rows.count() == 10
    assert rows.filter(channel="in_app", recipient_id=missing.recipient_id, status="delivered").count() == 1


def test_a_topic_chunk_builds_its_in_app_rows_from_arrays_once(tenant, make_template, make_recipients, settings):
    # Given a topic larger than FANOUT_SHARED_ROWS_MIN (the default) in one chunk
    make_template(default_channels=["in_app"])
    recipients = make_recipients(150)
    topic = Topic.objects.create(tenant=tenant, key="everyone")
    topic_subscribe(topic=topic, external_ids=[r.external_id for r in recipients])
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "7"}, topic="everyone"
    )

    # When the chunk runs, and is run again
    (chunk_id,) = notification_fan_out(notification_id=notification.pk)
    result = fanout_chunk_run(chunk_id=chunk_id, now=NOW)
    again = fanout_chunk_run(chunk_id=chunk_id, now=NOW)

    # Then every recipient has one delivered inbox row, and the second run did nothing
    assert result is not None and dict(result.statuses) == {"delivered": 150}
    assert again is None
    rows = Delivery.objects.filter(notification=notification)
    assert rows.count() == 150 == rows.filter(status="delivered").values("recipient_id").distinct().count()
    notification.refresh_from_db()
    assert notification.status in (Notification.Status.DISPATCHED, Notification.Status.COMPLETED)
