"""Quiet hours: a delivery due inside the recipient's local quiet hours waits for the window's end —
at fan-out and again when a retry or replay comes due — across DST nights and midnight; critical
categories and the in-app inbox are never held."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from apps.notifications.models import Category, Delivery, Preference, Recipient
from apps.notifications.services.dispatch import dispatch_due
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.preferences import quiet_hours_until

NEW_YORK = ZoneInfo("America/New_York")


def _until(now: datetime, start: time, end: time) -> datetime | None:
    return quiet_hours_until(now=now, tz=NEW_YORK, start=start, end=end)


def test_a_night_window_across_midnight_ends_at_local_time_on_both_dst_nights():
    # Quiet 22:00-07:00. Spring forward (2025-03-09): at 23:30 EST the night is 23 hours long.
    assert _until(datetime(2025, 3, 9, 4, 30, tzinfo=UTC), time(22), time(7)) == datetime(
        2025, 3, 9, 11, 0, tzinfo=UTC
    )  # 07:00 EDT
    # Fall back (2025-11-02): from 23:30 EDT, 07:00 EST is 8.5 hours of clock time but 9.5 real hours.
    assert _until(datetime(2025, 11, 2, 3, 30, tzinfo=UTC), time(22), time(7)) == datetime(
        2025, 11, 2, 12, 0, tzinfo=UTC
    )


def test_a_window_ending_in_the_skipped_hour_ends_when_the_clocks_jump():
    # Quiet 23:00-02:30; on 2025-03-09 02:30 never happens: 02:00 EST becomes 03:00 EDT (07:00 UTC).
    until = _until(datetime(2025, 3, 9, 6, 30, tzinfo=UTC), time(23), time(2, 30))  # 01:30 EST
    assert until == datetime(2025, 3, 9, 7, 0, tzinfo=UTC)
    # ...and after the jump (03:10 EDT) the window is over
    assert _until(datetime(2025, 3, 9, 7, 10, tzinfo=UTC), time(23), time(2, 30)) is None


def test_a_window_ending_in_the_repeated_hour_holds_until_its_wall_clock_end_each_time():
    # Quiet 23:00-01:30 on 2025-11-02, when 01:00-02:00 happens twice (EDT, then EST).
    first_pass = _until(datetime(2025, 11, 2, 5, 15, tzinfo=UTC), time(23), time(1, 30))  # 01:15 EDT
    assert first_pass == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)  # 01:30 EDT
    # At 01:15 EST the clock again reads inside the window: it holds until 01:30 EST, never
    # answering an end that is already past (which would send at once).
    second_pass = _until(datetime(2025, 11, 2, 6, 15, tzinfo=UTC), time(23), time(1, 30))
    assert second_pass == datetime(2025, 11, 2, 6, 30, tzinfo=UTC)


def test_a_window_starting_in_the_repeated_hour_starts_on_the_wall_clock():
    # Quiet 01:30-06:00 on 2025-11-02: 01:10 EDT is before it, 01:40 EDT and 01:40 EST inside.
    assert _until(datetime(2025, 11, 2, 5, 10, tzinfo=UTC), time(1, 30), time(6)) is None
    assert _until(datetime(2025, 11, 2, 5, 40, tzinfo=UTC), time(1, 30), time(6)) == datetime(
        2025, 11, 2, 11, 0, tzinfo=UTC
    )
    assert _until(datetime(2025, 11, 2, 6, 40, tzinfo=UTC), time(1, 30), time(6)) == datetime(
        2025, 11, 2, 11, 0, tzinfo=UTC
    )


def _quiet_now(tenant, external_id: str) -> datetime:
    """Gives the recipient a quiet window around the present moment (their zone: New York);
    returns when it ends."""
    now = timezone.now().astimezone(NEW_YORK)
    start, end = (now - timedelta(hours=1)).time(), (now + timedelta(hours=2)).time()
    Preference.objects.create(
        tenant=tenant,
        recipient=Recipient.objects.get(tenant=tenant, external_id=external_id),
        quiet_hours_start=start.replace(second=0, microsecond=0),
        quiet_hours_end=end.replace(second=0, microsecond=0),
    )
    until = quiet_hours_until(
        now=timezone.now(),
        tz=NEW_YORK,
        start=start.replace(second=0, microsecond=0),
        end=end.replace(second=0, microsecond=0),
    )
    assert until is not None
    return until


def _retry_now(notification) -> None:
    """As after a transient failure: the deliveries wait in `pending`, due now."""
    Delivery.objects.filter(notification=notification).exclude(status="suppressed").update(
        status="pending", next_attempt_at=timezone.now() - timedelta(seconds=1), attempts=1
    )


@pytest.mark.django_db
def test_a_retry_coming_due_inside_quiet_hours_waits_again_until_the_window_ends(
    tenant, make_template, make_recipients
):
    # Given a delivery sent before the quiet hours began, now due for a retry inside them
    make_template(default_channels=["email", "in_app"])
    make_recipients(1, timezone="America/New_York")
    notification = notification_create(
        tenant=tenant, template="order_shipped", payload={"order_id": "1"}, recipients=["user-0"]
    )
    (chunk_id,) = notification_fan_out(notification_id=notification.pk)
    fanout_chunk_run(chunk_id=chunk_id)
    until = _quiet_now(tenant, "user-0")
    _retry_now(notification)

    # When the dispatcher runs
    dispatch_due()

    # Then the email waits for the end of the window; the in-app inbox item does not wait
    email = Delivery.objects.get(notification=notification, channel="email")
    assert (email.status, email.next_attempt_at) == ("deferred", until)
    assert Delivery.objects.get(notification=notification, channel="in_app").status == "queued"
    # ...and once the window is over, the next run sends it
    dispatch_due(now=until)
    assert Delivery.objects.get(pk=email.pk).status == "queued"


@pytest.mark.django_db
def test_critical_retries_are_not_held_by_quiet_hours(tenant, make_template, make_recipients):
    make_template("password_reset", category="security", default_channels=["email"])
    Category.objects.filter(tenant=tenant, key="security").update(critical=True)
    make_recipients(1, timezone="America/New_York")
    notification = notification_create(
        tenant=tenant, template="password_reset", payload={"order_id": "1"}, recipients=["user-0"]
    )
    (chunk_id,) = notification_fan_out(notification_id=notification.pk)
    fanout_chunk_run(chunk_id=chunk_id)
    _quiet_now(tenant, "user-0")
    _retry_now(notification)

    dispatch_due()

    assert Delivery.objects.get(notification=notification).status == "queued"
