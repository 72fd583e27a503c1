"""The rules on their own: retry policy per tenant and channel, backoff with full jitter and a
Retry-After floor, the circuit breaker's states (in Redis), the send limits' Lua scripts, the
forward-only status order, and suppression addresses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from apps.core import redis_client
from apps.notifications.services import ratelimits
from apps.notifications.services.callbacks import STATUS_ORDER, earlier_than
from apps.notifications.services.sending import backoff_seconds, retry_policy_for
from apps.notifications.services.suppressions import normalize, suppression_reason_for
from apps.providers import circuit
from apps.providers.base import SendResult
from apps.providers.classify import parse_retry_after


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_retry_policy_is_configurable_per_tenant_and_channel(settings):
    settings.SIGNALBOX_NOTIFICATIONS = {"MAX_ATTEMPTS": 6, "RETRY_BASE_SECONDS": 15, "RETRY_CAP_SECONDS": 3600}
    tenant_settings = {
        "retry_policy": {"max_attempts": 5},
        "retry": {"sms": {"max_attempts": 2, "base_seconds": 1, "cap_seconds": 4}},
    }

    assert retry_policy_for({}, "email") == retry_policy_for(None)
    email = retry_policy_for(tenant_settings, "email")
    sms = retry_policy_for(tenant_settings, "sms")

    assert (email.max_attempts, email.base_seconds, email.cap_seconds) == (5, 15.0, 3600.0)
    assert (sms.max_attempts, sms.base_seconds, sms.cap_seconds) == (2, 1.0, 4.0)


def test_backoff_has_full_jitter_under_an_exponential_cap_and_retry_after_is_a_floor():
    policy = retry_policy_for({"retry_policy": {"base_seconds": 2, "cap_seconds": 30}})

    assert backoff_seconds(attempt=1, policy=policy, rng=lambda: 1.0) == 2.0
    assert backoff_seconds(attempt=3, policy=policy, rng=lambda: 1.0) == 8.0
    assert backoff_seconds(attempt=10, policy=policy, rng=lambda: 1.0) == 30.0  # capped
    assert backoff_seconds(attempt=3, policy=policy, rng=lambda: 0.0) == 0.0  # full jitter: from zero
    assert backoff_seconds(attempt=1, policy=policy, retry_after=45, rng=lambda: 0.5) == 45.0
    # SendGrid's X-RateLimit-Reset (an epoch second) counts as a Retry-After.
    reset = datetime.now(tz=UTC).timestamp() + 20
    assert 18 < (parse_retry_after({"X-RateLimit-Reset": str(int(reset))}) or 0) <= 20


def test_the_circuit_opens_after_repeated_failures_skips_the_provider_and_recovers(settings):
    settings.SIGNALBOX_CIRCUIT_BREAKER = {"FAILURES": 3, "WINDOW_SECONDS": 60, "COOLDOWN_SECONDS": 30}
    scope, chain = uuid.uuid4(), [Named("sendgrid"), Named("smtp")]
    providers: list[Any] = chain
    now = 1_000_000.0

    assert circuit.record(scope=scope, provider="sendgrid", failures=2, successes=0, now=now) == "closed"
    assert circuit.open_until(scope=scope, providers=["sendgrid", "smtp"]) == {}
    assert circuit.record(scope=scope, provider="sendgrid", failures=1, successes=0, now=now) == "opened"

    is_open = circuit.open_until(scope=scope, providers=["sendgrid", "smtp"])
    assert is_open == {"sendgrid": now + 30}
    assert getattr(circuit.choose(providers, 1, is_open=is_open), "name", None) == "smtp"  # skips the open one
    assert getattr(circuit.choose(providers, 2, is_open=is_open), "name", None) == "smtp"
    assert circuit.choose(providers, 1, is_open={"sendgrid": 1.0, "smtp": 2.0}) is None  # all open: hold

    # After the cool-down (half-open) one more failure reopens it at once; a success closes it.
    circuit.reset(scope=scope, provider="sendgrid")
    assert circuit.record(scope=scope, provider="sendgrid", failures=3, successes=0, now=now) == "opened"
    conn = redis_client.client()  # the open marker expires with the cool-down; expire it now

    assert conn is not None
    conn.delete(circuit._keys(scope, "sendgrid")[1])
    assert circuit.record(scope=scope, provider="sendgrid", failures=1, successes=0, now=now + 31) == "opened"
    conn.delete(circuit._keys(scope, "sendgrid")[1])
    assert circuit.record(scope=scope, provider="sendgrid", failures=0, successes=1, now=now + 62) == "closed"
    assert circuit.record(scope=scope, provider="sendgrid", failures=1, successes=0, now=now + 63) == "closed"


def _candidates(tenant_id, limits, n, *, channel="sms", recipient=1, critical=False):
    return [
        ratelimits.Candidate(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            recipient_id=recipient,
            channel=channel,
            critical=critical,
            limits=limits,
        )
        for _ in range(n)
    ]


def test_a_recipient_gets_at_most_n_per_hour_critical_is_exempt_and_retries_count_once():
    tenant_id, now = uuid.uuid4(), 2_000_000.0
    limits = ratelimits.limits_for({"rate_limits": {"recipient_per_hour": {"sms": 2}}})
    first = _candidates(tenant_id, limits, 3)

    sent, held = ratelimits.admit(provider="twilio", candidates=first, now=now)

    assert [c.id for c in sent] == [first[0].id, first[1].id]
    (third,) = held
    assert third.reason == "recipient_cap" and third.id == first[2].id
    assert now + 3600 <= third.until.timestamp() <= now + 3600 + ratelimits.SPREAD_SECONDS
    # A retry of an already counted delivery passes; a critical message passes; another recipient passes.
    again, _ = ratelimits.admit(provider="twilio", candidates=[first[0]], now=now + 10)
    critical, _ = ratelimits.admit(provider="twilio", candidates=_candidates(tenant_id, limits, 1, critical=True))
    other, _ = ratelimits.admit(provider="twilio", candidates=_candidates(tenant_id, limits, 1, recipient=2))
    assert len(again) == len(critical) == len(other) == 1
    # An hour later the window has room again.
    later, held_later = ratelimits.admit(provider="twilio", candidates=[first[2]], now=now + 3601)
    assert len(later) == 1 and not held_later


def test_the_daily_quota_and_the_provider_bucket_hold_the_excess_and_refund_what_they_held():
    tenant_id, now = uuid.uuid4(), 3_000_000.0
    limits = ratelimits.limits_for(
        {
            "rate_limits": {
                "recipient_per_hour": {"sms": 10},
                "daily_quota": {"sms": 5},
                "provider_per_second": {"twilio": {"rate": 2, "burst": 3}},
            }
        }
    )
    batch = [_candidates(tenant_id, limits, 1, recipient=i)[0] for i in range(6)]

    sent, held = ratelimits.admit(provider="twilio", candidates=batch, now=now)

    assert len(sent) == 3  # the bucket's burst
    reasons = sorted(h.reason for h in held)
    assert reasons == ["daily_quota", "provider_rate", "provider_rate"]
    bucket_waits = sorted(h.until.timestamp() - now for h in held if h.reason == "provider_rate")
    assert bucket_waits[0] >= 0.5 and bucket_waits[1] <= 1.0 + ratelimits.SPREAD_SECONDS
    # The two held by the bucket gave their quota and their recipient slot back: 2 of 5 remain.
    later, held_later = ratelimits.admit(provider="twilio", candidates=[h_c for h_c in batch[3:5]], now=now + 10)
    assert len(later) == 2 and not held_later
    last, held_last = ratelimits.admit(provider="twilio", candidates=[batch[5]], now=now + 20)
    assert not last and held_last[0].reason == "daily_quota"


def test_statuses_only_move_forward_and_provider_outcomes_are_final():
    assert "sent" in earlier_than("delivered") and "sending" in earlier_than("bounced")
    assert "delivered" not in earlier_than("bounced") and "bounced" not in earlier_than("delivered")
    assert "failed" not in earlier_than("delivered")
    assert STATUS_ORDER["read"] > STATUS_ORDER["delivered"] > STATUS_ORDER["sent"]


@pytest.mark.parametrize(
    ("channel", "code", "reason"),
    [
        ("sms", "21610", "unsubscribed"),
        ("sms", "21211", "invalid_address"),
        ("sms", "21614", "not_mobile"),
        ("email", "550", "hard_bounce"),
        ("webhook", "gone", "gone"),
        ("sms", "21408", None),  # about our account's permissions, not the number
        ("email", "auth_failed", None),
    ],
)
def test_permanent_errors_that_condemn_an_address_are_recognised(channel, code, reason):
    assert suppression_reason_for(channel, SendResult.permanent("p", "x", code=code)) == reason
    assert suppression_reason_for(channel, SendResult.transient("p", "x", code=code)) is None


def test_email_addresses_are_listed_case_insensitively():
    assert normalize("email", " Ada@Example.COM ") == "ada@example.com"
    assert normalize("sms", " +14155550100") == "+14155550100"


def test_the_provider_event_purge_has_a_permanent_name_and_is_a_beat_job():
    from apps.core.periodic import periodic_jobs
    from apps.providers import tasks

    task: Any = tasks.purge_events
    assert (task.name, task.queue) == ("signalbox.providers.purge_events", "maintenance")
    jobs = {job.task: job for job in periodic_jobs()}
    assert jobs["signalbox.providers.purge_events"].queue == "maintenance"


@pytest.mark.django_db
def test_applied_provider_event_ids_are_purged_after_their_retention(settings):
    from datetime import timedelta

    from django.utils import timezone

    from apps.providers.models import ProviderEvent
    from apps.providers.tasks import purge_events

    settings.SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS = 7
    now = timezone.now()
    ProviderEvent.objects.create(provider="sendgrid", event_id="old", received_at=now - timedelta(days=8))
    ProviderEvent.objects.create(provider="sendgrid", event_id="new", received_at=now - timedelta(days=6))

    assert purge_events() == 1
    assert list(ProviderEvent.objects.values_list("event_id", flat=True)) == ["new"]


def test_malformed_tenant_limits_are_ignored_rather_than_stopping_sends():
    assert ratelimits.limits_for({"rate_limits": {"recipient_per_hour": "ten"}}).empty
    assert ratelimits.limits_for({"rate_limits": {"daily_quota": {"sms": "many"}}}).empty
