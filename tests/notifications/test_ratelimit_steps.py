"""The send limits' checks one by one, against this run's Redis (`ratelimits.admit` runs them in
order; tests/reliability/test_policies.py drives it as a whole)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from apps.core import redis_client
from apps.notifications.services import ratelimits
from apps.notifications.services.ratelimits import (
    Admission,
    Candidate,
    daily_quotas_check,
    held_refund,
    provider_buckets_check,
    recipient_windows_check,
)


@pytest.fixture
def conn() -> Any:
    client = redis_client.client()
    assert client is not None, "these tests need this run's Redis"
    return client


def _candidates(limits: ratelimits.Limits, n: int, *, tenant_id: Any = None, recipient: Any = None) -> list[Candidate]:
    tenant_id = tenant_id or uuid.uuid4()
    return [
        Candidate(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            recipient_id=recipient if recipient is not None else i,
            channel="sms",
            critical=False,
            limits=limits,
        )
        for i in range(n)
    ]


def test_the_recipient_window_holds_past_its_cap_and_counts_the_others(conn):
    limits = ratelimits.limits_for({"rate_limits": {"recipient_per_hour": {"sms": 1}}})
    first, second = _candidates(limits, 2, recipient=7)
    admission = Admission(now=1_000_000.0)

    recipient_windows_check(conn, admission, [first, second])

    assert admission.window_counted == [first]
    (held,) = admission.held.values()
    assert (held.id, held.reason) == (second.id, "recipient_cap")
    assert held.until.timestamp() >= 1_000_000.0 + ratelimits.HOUR


def test_the_daily_quota_charges_what_fits_and_holds_the_rest_until_midnight(conn):
    limits = ratelimits.limits_for({"rate_limits": {"daily_quota": {"sms": 2}}})
    batch = _candidates(limits, 3)
    admission = Admission(now=2_000_000.0)

    daily_quotas_check(conn, admission, batch)

    assert [c.id for c in admission.passing(batch)] == [batch[0].id, batch[1].id]
    assert len(admission.charges[id(batch[0])]) == 1 and id(batch[2]) not in admission.charges
    (held,) = admission.held.values()
    assert held.reason == "daily_quota" and held.until.hour == 0 and held.until.minute == 0


def test_the_provider_bucket_lets_its_burst_through_and_spaces_the_rest(conn):
    limits = ratelimits.limits_for({"rate_limits": {"provider_per_second": {"twilio": {"rate": 1, "burst": 2}}}})
    batch = _candidates(limits, 4)
    admission = Admission(now=3_000_000.0)

    provider_buckets_check(conn, admission, "twilio", batch)

    assert len(admission.passing(batch)) == 2
    waits = sorted(h.until.timestamp() - 3_000_000.0 for h in admission.held.values())
    assert {h.reason for h in admission.held.values()} == {"provider_rate"}
    assert 1.0 <= waits[0] <= 2.0 and 2.0 <= waits[1] <= 3.0
    # Another provider's bucket is not touched.
    other = Admission(now=3_000_000.0)
    provider_buckets_check(conn, other, "sendgrid", batch)
    assert not other.held


def test_a_held_candidate_gives_back_its_window_slot_and_quota(conn):
    limits = ratelimits.limits_for({"rate_limits": {"recipient_per_hour": {"sms": 5}, "daily_quota": {"sms": 1}}})
    tenant_id = uuid.uuid4()
    (candidate,) = _candidates(limits, 1, tenant_id=tenant_id)
    admission = Admission(now=4_000_000.0)
    recipient_windows_check(conn, admission, [candidate])
    daily_quotas_check(conn, admission, [candidate])
    admission.hold(candidate, 60, "provider_rate", "a later check held it")

    held_refund(conn, admission, [candidate])

    # The quota of one is free again, and the window does not count it any more.
    again = Admission(now=4_000_001.0)
    (fresh,) = _candidates(limits, 1, tenant_id=tenant_id)
    daily_quotas_check(conn, again, [fresh])
    assert not again.held
    assert conn.zscore(ratelimits._recipient_key(candidate), str(candidate.id)) is None
