"""Fan-out in chunks: a bounded number of queries per chunk, idempotent re-runs, and each
(recipient, channel) decided by preferences, quiet hours (across DST), digests and dedup keys.

These drive the services directly in the test's transaction (nothing is published); the
end-to-end path through the worker is in test_pipeline.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.notifications.models import Category, Delivery, DigestItem, FanoutChunk, Notification, Preference, Topic
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.preferences import quiet_hours_until
from apps.notifications.services.recipients import device_register, topic_subscribe

pytestmark = pytest.mark.django_db


@pytest.fixture
def chunk_size(settings):
    def set_size(n: int) -> None:
        settings.SIGNALBOX_NOTIFICATIONS = {**settings.SIGNALBOX_NOTIFICATIONS, "FANOUT_CHUNK_SIZE": n}

    return set_size


def _fan_out(notification, now=None) -> list:
    chunk_ids = notification_fan_out(notification_id=notification.pk)
    return [fanout_chunk_run(chunk_id=pk, now=now) for pk in chunk_ids]


def _statuses(notification) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (d.recipient.external_id, d.channel): (d.status, d.suppression_reason)
        for d in Delivery.objects.filter(notification=notification).select_related("recipient")
    }


def test_chunked_fan_out_runs_a_bounded_number_of_queries_per_chunk(tenant, make_template, make_recipients, chunk_size):
    # Given 3,000 subscribers of a topic, some with push devices, and chunks of 1,000
    make_template(default_channels=["email", "in_app", "push"])
    recipients = make_recipients(3000)
    topic = Topic.objects.create(tenant=tenant, key="everyone")
    topic_subscribe(topic=topic, external_ids=[r.external_id for r in recipients])
    for r in recipients[:50]:
        device_register(recipient=r, platform="ios", token=f"tok-{r.pk}")
    chunk_size(1000)
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "A-1"}, topic="everyone"
    )

    # When the notification is planned and each chunk expanded
    chunk_ids = notification_fan_out(notification_id=notification.pk)
    queries = []
    for pk in chunk_ids:
        with CaptureQueriesContext(connection) as ctx:
            result = fanout_chunk_run(chunk_id=pk)
        queries.append(len(ctx.captured_queries))
        assert result is not None and result.recipients == 1000

    # Then there are three chunks, each with the same small number of queries
    assert len(chunk_ids) == 3
    # Savepoints included; the first chunk also creates the connection's staging tables, the
    # last one also marks the notification dispatched; every run is counted first, in one
    # statement (a chunk that fails every time ends dead); the in-app rows, built by PostgreSQL
    # from arrays, are one INSERT of their own in a savepoint. None of it depends on the chunk size.
    assert max(queries) <= 27, queries
    assert Delivery.objects.filter(notification=notification).count() == 9000
    counts = Delivery.objects.filter(notification=notification).values_list("channel", "status")
    assert sum(1 for c, s in counts if c == "in_app" and s == "delivered") == 3000
    assert sum(1 for c, s in counts if c == "email" and s == "queued") == 3000
    assert sum(1 for c, s in counts if c == "push" and s == "queued") == 50
    assert sum(1 for c, s in counts if c == "push" and s == "suppressed") == 2950
    notification.refresh_from_db()
    assert notification.status == Notification.Status.DISPATCHED
    assert notification.recipient_count == 3000


def test_queries_per_chunk_do_not_grow_with_chunk_size(tenant, make_template, make_recipients, chunk_size):
    make_template()
    recipients = make_recipients(2400)
    topic = Topic.objects.create(tenant=tenant, key="everyone")
    topic_subscribe(topic=topic, external_ids=[r.external_id for r in recipients])
    counts = {}
    for size in (400, 1200):
        chunk_size(size)
        notification = notification_create(
            tenant=tenant, template="order_shipped", payload={"order_id": "1"}, topic="everyone"
        )
        chunk_ids = notification_fan_out(notification_id=notification.pk)
        with CaptureQueriesContext(connection) as ctx:
            fanout_chunk_run(chunk_id=chunk_ids[0])
        counts[size] = len(ctx.captured_queries)
    assert counts[400] == counts[1200], counts


def test_a_rerun_chunk_creates_no_duplicates(tenant, make_template, make_recipients):
    make_template()
    make_recipients(30)
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "1"}, recipients=[f"user-{i}" for i in range(30)]
    )
    (result,) = _fan_out(notification)
    assert sum(result.statuses.values()) == 60

    # A crash after commit but before the task was acknowledged: the chunk runs again.
    FanoutChunk.objects.filter(notification=notification).update(done_at=None)
    (again,) = [fanout_chunk_run(chunk_id=c.pk) for c in FanoutChunk.objects.filter(notification=notification)]
    assert again is not None and sum(again.statuses.values()) == 0
    assert Delivery.objects.filter(notification=notification).count() == 60

    # And a run of a chunk already done does nothing at all.
    assert fanout_chunk_run(chunk_id=FanoutChunk.objects.get(notification=notification).pk) is None


def test_preferences_decide_each_delivery(tenant, make_template, make_recipients):
    # Given recipients with different preferences for the `orders` category
    make_template(default_channels=["email", "sms", "in_app"])
    make_recipients(1, prefix="plain", phone="+14155550100")
    make_recipients(1, prefix="no-email", phone="+14155550101")
    make_recipients(1, prefix="gone", phone="+14155550102", unsubscribed=True)
    make_recipients(1, prefix="no-phone")
    make_recipients(1, prefix="digest", phone="+14155550103")
    orders = Category.objects.get(tenant=tenant, key="orders")
    from apps.notifications.models import Recipient

    def pref(external_id, **fields):
        Preference.objects.create(
            tenant=tenant, recipient=Recipient.objects.get(external_id=external_id), category=orders, **fields
        )

    pref("no-email-0", channels={"email": False})
    pref("digest-0", digest="daily")

    # When a notification goes to all of them
    notification = notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": "7"},
        recipients=["plain-0", "no-email-0", "gone-0", "no-phone-0", "digest-0"],
    )
    _fan_out(notification)

    # Then each delivery records why it was or was not sent
    got = _statuses(notification)
    assert got[("plain-0", "email")] == ("queued", "")
    assert got[("plain-0", "sms")] == ("queued", "")
    assert got[("plain-0", "in_app")] == ("delivered", "")
    assert got[("no-email-0", "email")] == ("suppressed", "opted_out")
    assert got[("no-email-0", "sms")] == ("queued", "")
    assert got[("gone-0", "email")] == ("suppressed", "unsubscribed")
    assert got[("gone-0", "in_app")] == ("suppressed", "unsubscribed")
    assert got[("no-phone-0", "sms")] == ("suppressed", "no_address")
    assert got[("digest-0", "email")] == ("digest", "")
    assert got[("digest-0", "in_app")] == ("delivered", "")  # the inbox is never held back
    item = DigestItem.objects.get(delivery__recipient__external_id="digest-0", channel="email")
    assert item.frequency == "daily" and item.flushed_at is None


def test_tenant_defaults_apply_and_recipients_override_them(tenant, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(2)
    orders = Category.objects.get(tenant=tenant, key="orders")
    Preference.objects.create(tenant=tenant, recipient=None, category=orders, channels={"email": False})
    from apps.notifications.models import Recipient

    Preference.objects.create(
        tenant=tenant, recipient=Recipient.objects.get(external_id="user-1"), category=None, channels={"email": True}
    )
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "1"}, recipients=["user-0", "user-1"]
    )
    _fan_out(notification)
    got = _statuses(notification)
    assert got[("user-0", "email")] == ("suppressed", "opted_out")
    assert got[("user-1", "email")] == ("queued", "")


def test_critical_categories_ignore_opt_outs_quiet_hours_and_digests(tenant, make_template, make_recipients):
    make_template("password_reset", category="security", default_channels=["email"])
    Category.objects.filter(tenant=tenant, key="security").update(critical=True)
    make_recipients(1, prefix="gone", unsubscribed=True)
    make_recipients(1, prefix="night", timezone="UTC")
    make_recipients(1, prefix="none", email="")
    from apps.notifications.models import Recipient

    Preference.objects.create(
        tenant=tenant,
        recipient=Recipient.objects.get(external_id="night-0"),
        channels={"email": False},
        digest="weekly",
        quiet_hours_start=time(0, 0),
        quiet_hours_end=time(23, 59),
    )
    notification = notification_create(
        tenant=tenant, template="password_reset", payload={"order_id": "x"}, recipients=["gone-0", "night-0", "none-0"]
    )
    _fan_out(notification, now=datetime(2030, 1, 1, 12, 0, tzinfo=UTC))
    got = _statuses(notification)
    assert got[("gone-0", "email")] == ("queued", "")
    assert got[("night-0", "email")] == ("queued", "")
    assert got[("none-0", "email")] == ("suppressed", "no_address")  # critical or not, no address is no address


def test_quiet_hours_defer_to_the_local_end_of_the_window(tenant, make_template, make_recipients):
    make_template(default_channels=["email", "in_app"])
    make_recipients(1, prefix="paris", timezone="Europe/Paris")
    from apps.notifications.models import Recipient

    Preference.objects.create(
        tenant=tenant,
        recipient=Recipient.objects.get(external_id="paris-0"),
        quiet_hours_start=time(22),
        quiet_hours_end=time(7),
    )
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "1"}, recipients=["paris-0"]
    )
    # 23:30 in Paris (winter, UTC+1)
    _fan_out(notification, now=datetime(2030, 1, 15, 22, 30, tzinfo=UTC))
    email = Delivery.objects.get(notification=notification, channel="email")
    assert email.status == "deferred"
    assert email.next_attempt_at == datetime(2030, 1, 16, 6, 0, tzinfo=UTC)  # 07:00 Paris
    assert Delivery.objects.get(notification=notification, channel="in_app").status == "delivered"


def test_fan_out_defers_across_a_dst_change_to_local_morning(tenant, make_template, make_recipients):
    # A New Yorker asleep (22:00-08:00) on the night clocks spring forward.
    make_template(default_channels=["sms"])
    make_recipients(1, prefix="ny", timezone="America/New_York", phone="+12125550100")
    from apps.notifications.models import Recipient

    Preference.objects.create(
        tenant=tenant,
        recipient=Recipient.objects.get(external_id="ny-0"),
        quiet_hours_start=time(22),
        quiet_hours_end=time(8),
    )
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "1"}, recipients=["ny-0"]
    )
    _fan_out(notification, now=datetime(2025, 3, 9, 6, 0, tzinfo=UTC))  # 01:00 EST
    sms = Delivery.objects.get(notification=notification)
    assert sms.status == "deferred"
    assert sms.next_attempt_at == datetime(2025, 3, 9, 12, 0, tzinfo=UTC)  # 08:00 EDT


def test_quiet_hours_across_the_spring_dst_change():
    # New York, quiet 22:00-08:00; 01:00 EST on the night clocks jump from 02:00 to 03:00.
    tz = ZoneInfo("America/New_York")
    now = datetime(2025, 3, 9, 6, 0, tzinfo=UTC)  # 01:00 EST
    until = quiet_hours_until(now=now, tz=tz, start=time(22), end=time(8))
    # 08:00 EDT is 12:00 UTC (adding 7 hours to 01:00 EST would wrongly give 13:00 UTC).
    assert until == datetime(2025, 3, 9, 12, 0, tzinfo=UTC)
    # And in autumn, 08:00 EST after the 25-hour night is 13:00 UTC.
    autumn = quiet_hours_until(now=datetime(2025, 11, 2, 5, 30, tzinfo=UTC), tz=tz, start=time(22), end=time(8))
    assert autumn == datetime(2025, 11, 2, 13, 0, tzinfo=UTC)


def test_quiet_hours_outside_the_window_and_in_a_same_day_window():
    tz = ZoneInfo("Asia/Tokyo")  # UTC+9
    assert (
        quiet_hours_until(now=datetime(2030, 1, 1, 3, 0, tzinfo=UTC), tz=tz, start=time(22), end=time(7)) is None
    )  # 12:00
    lunch = quiet_hours_until(now=datetime(2030, 1, 1, 3, 30, tzinfo=UTC), tz=tz, start=time(12), end=time(13))
    assert lunch == datetime(2030, 1, 1, 4, 0, tzinfo=UTC)
    assert quiet_hours_until(now=datetime(2030, 1, 1, 3, 0, tzinfo=UTC), tz=tz, start=time(9), end=time(9)) is None


def test_dedup_key_suppresses_a_repeat_within_the_window(tenant, make_template, make_recipients):
    make_template(default_channels=["email"])
    make_recipients(2)
    first = notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": "1"},
        recipients=["user-0"],
        dedup_key="order-1",
        dedup_window_seconds=600,
    )
    _fan_out(first)
    second = notification_create(
        tenant=tenant,
        template="order_shipped",
        payload={"order_id": "1"},
        recipients=["user-0", "user-1"],
        dedup_key="order-1",
        dedup_window_seconds=600,
    )
    _fan_out(second)
    got = _statuses(second)
    assert got[("user-0", "email")] == ("suppressed", "duplicate")
    assert got[("user-1", "email")] == ("queued", "")


def test_inline_in_app_content_is_rendered_per_locale_with_fallback(tenant, make_template, make_recipients):
    make_template(default_channels=["in_app"])
    make_recipients(1, prefix="fr-ca", locale="fr-CA")
    make_recipients(1, prefix="de", locale="de")
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "9"}, recipients=["fr-ca-0", "de-0"]
    )
    _fan_out(notification)
    by_recipient = {
        d.recipient.external_id: d.rendered or {}
        for d in Delivery.objects.filter(notification=notification).select_related("recipient")
    }
    assert by_recipient["fr-ca-0"]["locale"] == "fr"
    assert by_recipient["fr-ca-0"]["content"]["title"] == "Commande 9 expédiée"
    assert by_recipient["de-0"]["locale"] == "default"
    assert by_recipient["de-0"]["content"]["title"] == "Order 9 shipped"
