"""Digest window boundaries: wall times in the recipient's timezone, across DST and midnight."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from apps.notifications.services.digest import digest_rule_errors, period_window
from apps.notifications.services.preferences import local_instant

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+5:30
NINE = time(9, 0)


def _window(frequency: str, now: datetime, tz: ZoneInfo = NEW_YORK, at: time = NINE, weekday: int = 0):
    return period_window(frequency=frequency, now=now, tz=tz, daily_at=at, weekly_day=weekday)


def test_a_daily_window_runs_from_one_local_nine_oclock_to_the_next():
    # 2030-01-15 12:00 UTC is 07:00 in New York (EST, UTC-5): before today's 09:00.
    window = _window("daily", datetime(2030, 1, 15, 12, 0, tzinfo=UTC))
    assert window.starts_at == datetime(2030, 1, 14, 14, 0, tzinfo=UTC)
    assert window.due_at == datetime(2030, 1, 15, 14, 0, tzinfo=UTC)
    assert window.window_key == "daily@2030-01-15T14:00:00Z"
    # At 09:00 sharp the next window has begun.
    assert _window("daily", window.due_at).starts_at == window.due_at


def test_a_daily_window_over_the_spring_forward_night_is_23_hours_and_ends_at_local_nine():
    # 2025-03-09: New York clocks jump from 02:00 EST to 03:00 EDT.
    window = _window("daily", datetime(2025, 3, 9, 7, 30, tzinfo=UTC))  # 03:30 EDT
    assert window.starts_at == datetime(2025, 3, 8, 14, 0, tzinfo=UTC)  # 09:00 EST
    assert window.due_at == datetime(2025, 3, 9, 13, 0, tzinfo=UTC)  # 09:00 EDT
    assert (window.due_at - window.starts_at).total_seconds() == 23 * 3600


def test_a_daily_window_over_the_fall_back_night_is_25_hours():
    # 2025-11-02: New York clocks go back from 02:00 EDT to 01:00 EST.
    window = _window("daily", datetime(2025, 11, 2, 6, 30, tzinfo=UTC))  # 01:30 EST, the second time
    assert window.starts_at == datetime(2025, 11, 1, 13, 0, tzinfo=UTC)  # 09:00 EDT
    assert window.due_at == datetime(2025, 11, 2, 14, 0, tzinfo=UTC)  # 09:00 EST
    assert (window.due_at - window.starts_at).total_seconds() == 25 * 3600


def test_a_digest_time_the_clocks_skip_is_sent_when_they_jump():
    # A daily digest at 02:30 on the spring-forward day goes at 03:00 EDT, the jump (07:00 UTC).
    window = _window("daily", datetime(2025, 3, 9, 6, 45, tzinfo=UTC), at=time(2, 30))  # 01:45 EST
    assert window.due_at == datetime(2025, 3, 9, 7, 0, tzinfo=UTC)
    assert local_instant(datetime(2025, 3, 9).date(), time(2, 30), NEW_YORK) == datetime(2025, 3, 9, 7, 0, tzinfo=UTC)


def test_a_digest_time_the_clocks_repeat_is_its_first_occurrence():
    # 01:30 happens twice on 2025-11-02: 05:30 UTC (EDT) first, 06:30 UTC (EST) again.
    assert local_instant(datetime(2025, 11, 2).date(), time(1, 30), NEW_YORK) == datetime(
        2025, 11, 2, 5, 30, tzinfo=UTC
    )
    window = _window("daily", datetime(2025, 11, 2, 5, 0, tzinfo=UTC), at=time(1, 30))
    assert window.due_at == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)
    # After the first 01:30 (even during the repeated hour), the next window ends the following night.
    later = _window("daily", datetime(2025, 11, 2, 6, 0, tzinfo=UTC), at=time(1, 30))
    assert later.due_at == datetime(2025, 11, 3, 6, 30, tzinfo=UTC)


def test_hourly_windows_follow_local_hours_even_at_half_hour_offsets():
    window = _window("hourly", datetime(2030, 1, 1, 10, 10, tzinfo=UTC), tz=KOLKATA)  # 15:40 IST
    assert window.starts_at == datetime(2030, 1, 1, 9, 30, tzinfo=UTC)  # 15:00 IST
    assert window.due_at == datetime(2030, 1, 1, 10, 30, tzinfo=UTC)  # 16:00 IST


def test_hourly_windows_through_the_repeated_hour_are_each_one_hour():
    first = _window("hourly", datetime(2025, 11, 2, 5, 10, tzinfo=UTC))  # 01:10 EDT
    second = _window("hourly", datetime(2025, 11, 2, 6, 10, tzinfo=UTC))  # 01:10 EST
    assert first.due_at == second.starts_at == datetime(2025, 11, 2, 6, 0, tzinfo=UTC)
    assert first.window_key != second.window_key


def test_a_weekly_window_ends_on_the_weekday_at_the_local_time_across_midnight_in_utc():
    # Tokyo (UTC+9), weekly on Monday 08:00: Sunday 23:00 UTC. Now: Friday 2030-01-04 12:00 UTC.
    tokyo = ZoneInfo("Asia/Tokyo")
    window = _window("weekly", datetime(2030, 1, 4, 12, 0, tzinfo=UTC), tz=tokyo, at=time(8), weekday=0)
    assert window.due_at == datetime(2030, 1, 6, 23, 0, tzinfo=UTC)  # Monday 2030-01-07 08:00 JST
    assert window.starts_at == datetime(2029, 12, 30, 23, 0, tzinfo=UTC)
    # Exactly at the boundary, the next week begins.
    assert _window("weekly", window.due_at, tz=tokyo, at=time(8)).due_at == datetime(2030, 1, 13, 23, 0, tzinfo=UTC)


def test_a_digest_rule_is_validated():
    assert digest_rule_errors({"key": "post-{{ post_id }}", "window_minutes": 10}, {"post_id"}) == (
        {"key": "post-{{ post_id }}", "window_minutes": 10},
        [],
    )
    assert digest_rule_errors(None, set()) == (None, [])
    _, errors = digest_rule_errors({"key": "{{ nope }}", "window_minutes": 0, "extra": 1}, {"post_id"})
    assert any("Unknown field" in e for e in errors)
    assert any("undeclared" in e for e in errors)
    assert any("window_minutes" in e for e in errors)
    _, errors = digest_rule_errors({"key": "{{ recipient.name }}", "window_minutes": 5}, None)
    assert errors and "recipient" in errors[0]
    _, errors = digest_rule_errors({"key": "{% if %}", "window_minutes": 5}, None)
    assert errors and errors[0].startswith("`key`: line 1")
