"""What each provider's answer leads to, through the real send pipeline and the providers' SDKs
against the sandbox (in this process; the worker-driven faults are in test_crashes.py):
permanent errors that condemn an address, the circuit breaker's fallback, send limits that hold
deliveries back without dropping them, and the dedup window."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.core import redis_client
from apps.notifications.models import (
    Category,
    Delivery,
    DeliveryAttempt,
    Device,
    FanoutChunk,
    Notification,
    Recipient,
    Suppression,
)
from apps.notifications.services.dispatch import dispatch_due
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.recipients import device_register
from apps.notifications.services.sending import deliveries_send
from apps.providers import circuit
from apps.providers.models import ProviderConfig
from sandbox.testing import SandboxClient, SandboxProcess
from tests.reliability.conftest import assert_delivered_once, in_flight, people, send

pytestmark = pytest.mark.django_db


def run(notification: Notification) -> None:
    """Fan-out and sends, as the worker would run them (publishing is off: nothing commits here)."""
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    drain([notification])


def drain(notifications: list[Notification], *, rounds: int = 8) -> None:
    """Sends what is queued, then what the dispatcher finds due (retries), a few rounds."""
    ids = [n.pk for n in notifications]
    for _ in range(rounds):
        queued = list(Delivery.objects.filter(notification_id__in=ids, status="queued").values_list("pk", flat=True))
        if queued:
            deliveries_send(delivery_ids=queued)
        dispatch_due(now=timezone.now() + timedelta(minutes=5))
        if not Delivery.objects.filter(notification_id__in=ids, status__in=["queued", "pending"]).exists():
            return


def statuses(notification: Notification) -> dict[tuple[str, str], tuple[str, str]]:
    return {
        (d.recipient.external_id, d.channel): (d.status, d.error_code or d.suppression_reason)
        for d in Delivery.objects.filter(notification=notification).select_related("recipient")
    }


def test_permanent_errors_flag_the_address_and_the_next_notification_skips_it(
    sandboxed: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    # Given numbers Twilio refuses for good, a dead push token and a webhook endpoint that is gone
    sandbox_client.add_fault("twilio", 21610, match="+14155550001")  # the person texted STOP
    sandbox_client.add_fault("twilio", 21211, match="+14155550002")  # not a valid number
    sandbox_client.add_fault("twilio", 21614, match="+14155550003")  # a landline
    sandbox_client.add_fault("fcm", "UNREGISTERED", match="tok-dead")
    sandbox_client.add_fault("webhook", 410, match="gone")
    audience = [
        {"external_id": "stop", "phone": "+14155550001"},
        {"external_id": "invalid", "phone": "+14155550002"},
        {"external_id": "landline", "phone": "+14155550003"},
        {"external_id": "ok", "phone": "+14155550004", "webhook_url": f"{sandbox.http_url}/hooks/gone"},
    ]
    first = send(sandboxed, audience, ["sms", "webhook"])
    ok = Recipient.objects.get(tenant=sandboxed, external_id="ok")
    device_register(recipient=ok, platform="ios", token="tok-dead")
    device_register(recipient=ok, platform="android", token="tok-live")
    push = send(sandboxed, ["ok"], ["push"])

    # When they are sent
    run(first)
    run(push)

    # Then each fails once, without a retry, and the address goes on the suppression list
    got = statuses(first)
    assert got[("stop", "sms")] == ("failed", "21610")
    assert got[("invalid", "sms")] == ("failed", "21211")
    assert got[("landline", "sms")] == ("failed", "21614")
    assert got[("ok", "sms")][0] == "sent"
    assert got[("ok", "webhook")] == ("failed", "gone")
    assert len(sandbox_client.requests("twilio")) == 4  # no retry of a permanent error
    listed = {(s.channel, s.address): s.reason for s in Suppression.objects.filter(tenant=sandboxed)}
    assert listed == {
        ("sms", "+14155550001"): "unsubscribed",
        ("sms", "+14155550002"): "invalid_address",
        ("sms", "+14155550003"): "not_mobile",
        ("webhook", f"{sandbox.http_url}/hooks/gone"): "gone",
    }
    # And the dead push token is deactivated while the live one got the message
    assert statuses(push)[("ok", "push")][0] == "sent"
    assert not Device.objects.get(token="tok-dead").active and Device.objects.get(token="tok-live").active

    # When the next notification goes to the same people, even a critical one
    Category.objects.create(tenant=sandboxed, key="security", critical=True)
    second = send(sandboxed, [a["external_id"] for a in audience], ["sms", "webhook"], category="security")
    run(second)

    # Then the listed addresses are suppressed at fan-out and nothing reaches the providers
    got = statuses(second)
    for who in ("stop", "invalid", "landline"):
        assert got[(who, "sms")] == ("suppressed", "suppressed_address")
    assert got[("ok", "webhook")] == ("suppressed", "suppressed_address")
    assert got[("ok", "sms")][0] == "sent"
    assert len(sandbox_client.requests("twilio")) == 5
    assert_delivered_once(sandbox_client, [first.pk, push.pk, second.pk])


def test_an_smtp_hard_bounce_lists_the_address_and_a_listed_address_is_checked_again_at_send_time(
    sandboxed: Any, sandbox_client: SandboxClient
):
    ProviderConfig.objects.filter(tenant=sandboxed, provider="sendgrid").update(enabled=False)  # SMTP only
    sandbox_client.add_fault("smtp", 550, match="p-0@example.com")
    first = send(sandboxed, people(2), ["email"])
    run(first)
    assert statuses(first)[("p-0", "email")] == ("failed", "550")
    assert Suppression.objects.get(tenant=sandboxed, address="p-0@example.com").reason == "hard_bounce"

    # A delivery fanned out before its address was listed is suppressed when its turn comes.
    later = send(sandboxed, ["p-1"], ["email"])
    for chunk_id in notification_fan_out(notification_id=later.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    Suppression.objects.create(tenant=sandboxed, channel="email", address="p-1@example.com", reason="spam_report")
    drain([later])
    assert statuses(later)[("p-1", "email")] == ("suppressed", "suppressed_address")
    assert_delivered_once(sandbox_client, [first.pk, later.pk])


def test_a_failing_provider_trips_its_breaker_and_the_chain_falls_back_then_holds(
    sandboxed: Any, sandbox_client: SandboxClient, settings
):
    settings.SIGNALBOX_CIRCUIT_BREAKER = {"FAILURES": 3, "WINDOW_SECONDS": 60, "COOLDOWN_SECONDS": 30}
    sandbox_client.add_fault("sendgrid", 503)  # SendGrid is down

    # The first batch fails on SendGrid (3 failures: the breaker opens) and its retries go to SMTP
    first = send(sandboxed, people(3, "a"), ["email"])
    run(first)
    assert set(statuses(first).values()) == {("sent", "")}
    assert [a.provider for a in DeliveryAttempt.objects.filter(delivery__notification=first).order_by("number")][
        :3
    ] == ["sendgrid"] * 3

    # While it is open, first attempts skip SendGrid altogether
    requests_before = len(sandbox_client.requests("sendgrid"))
    second = send(sandboxed, people(2, "b"), ["email"])
    run(second)
    attempts = list(DeliveryAttempt.objects.filter(delivery__notification=second))
    assert {(a.number, a.provider, a.outcome) for a in attempts} == {(1, "smtp", "accepted")}
    assert len(sandbox_client.requests("sendgrid")) == requests_before

    # When SMTP fails too, every provider of the chain is open: deliveries wait, no attempt is spent
    sandbox_client.add_fault("smtp", 451)
    third = send(sandboxed, people(3, "c"), ["email"])
    run(third)
    fourth = send(sandboxed, people(1, "d"), ["email"])
    for chunk_id in notification_fan_out(notification_id=fourth.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    deliveries_send(delivery_ids=list(Delivery.objects.filter(notification=fourth).values_list("pk", flat=True)))
    held = Delivery.objects.get(notification=fourth)
    assert (held.status, held.attempts, held.error_code) == ("pending", 0, "held_circuit_open")
    assert held.next_attempt_at is not None
    assert timezone.now() + timedelta(seconds=20) < held.next_attempt_at < timezone.now() + timedelta(seconds=40)
    assert not DeliveryAttempt.objects.filter(delivery=held).exists()

    # Once the providers recover and the breakers close, everything goes out exactly once
    sandbox_client.clear_faults()
    for name in ("sendgrid", "smtp"):
        circuit.reset(scope=sandboxed.pk, provider=name)
    drain([third, fourth])
    for notification in (third, fourth):
        assert {s for s, _ in statuses(notification).values()} == {"sent"}
    # Retries spent by the third batch are not counted against the fourth, which was held.
    assert DeliveryAttempt.objects.get(delivery=held).number == 1


def test_send_limits_hold_deliveries_back_and_send_them_later_never_drop_them(
    sandboxed: Any, sandbox_client: SandboxClient
):
    sandboxed.settings = {
        **sandboxed.settings,
        "rate_limits": {"recipient_per_hour": {"sms": 1}, "provider_per_second": {"twilio": {"rate": 4, "burst": 2}}},
    }
    sandboxed.save(update_fields=["settings"])

    # Twilio takes 2 at once, then 4 per second: a batch of 5 trickles out over about a second
    burst = send(sandboxed, people(5, "many"), ["sms"])
    for chunk_id in notification_fan_out(notification_id=burst.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    deliveries_send(delivery_ids=list(Delivery.objects.filter(notification=burst).values_list("pk", flat=True)))
    held = Delivery.objects.filter(notification=burst, error_code="held_provider_rate")
    assert held.count() == 3 and all(d.attempts == 0 and d.status == "pending" for d in held)
    deadline = time.monotonic() + 10
    while in_flight([burst.pk]) and time.monotonic() < deadline:
        time.sleep(0.2)
        dispatch_due()  # at the real time: each comes due when the bucket has a token for it
        queued = Delivery.objects.filter(notification=burst, status="queued").values_list("pk", flat=True)
        deliveries_send(delivery_ids=list(queued))
    assert {s for s, _ in statuses(burst).values()} == {"sent"}

    # A second SMS to one recipient within the hour waits for the hour to pass
    time.sleep(0.6)  # the bucket refills
    first = send(sandboxed, people(1, "solo"), ["sms"])
    run(first)
    second = send(sandboxed, ["solo-0"], ["sms"])
    run(second)
    waiting = Delivery.objects.get(notification=second)
    assert (waiting.status, waiting.attempts, waiting.error_code) == ("pending", 0, "held_recipient_cap")
    assert waiting.next_attempt_at is not None and waiting.next_attempt_at > timezone.now() + timedelta(minutes=59)
    assert sandbox_client.count("twilio", str(waiting.pk)) == 0

    # When the hour has passed (its window expires in Redis), the held SMS goes out, once
    conn = redis_client.client()
    assert conn is not None
    for key in conn.scan_iter(redis_client.key("rl", "recipient", sandboxed.pk, "*")):
        conn.delete(key)
    dispatch_due(now=waiting.next_attempt_at + timedelta(seconds=1))
    drain([second])
    assert statuses(second)[("solo-0", "sms")][0] == "sent"
    assert_delivered_once(sandbox_client, [first.pk, second.pk, burst.pk])


def test_a_repeated_dedup_key_within_the_window_is_suppressed_as_a_duplicate(
    sandboxed: Any, sandbox_client: SandboxClient
):
    first = send(sandboxed, people(2), ["sms", "in_app"], dedup_key="order-7-shipped", dedup_window_seconds=600)
    run(first)
    again = send(sandboxed, ["p-0", "p-1"], ["sms", "in_app"], dedup_key="order-7-shipped", dedup_window_seconds=600)
    run(again)
    other_key = send(sandboxed, ["p-0"], ["sms"], dedup_key="order-8-shipped")
    run(other_key)

    assert {v for v in statuses(again).values()} == {("suppressed", "duplicate")}
    assert statuses(other_key)[("p-0", "sms")][0] == "sent"
    assert len(sandbox_client.messages("twilio")) == 3
    assert_delivered_once(sandbox_client, [first.pk, again.pk, other_key.pk])


def test_a_fan_out_chunk_run_twice_puts_each_item_in_the_inbox_once(sandboxed: Any):
    notification = send(sandboxed, people(3), ["in_app", "sms"])
    chunk_ids = notification_fan_out(notification_id=notification.pk)
    for chunk_id in chunk_ids:
        fanout_chunk_run(chunk_id=chunk_id)

    # The chunk's message comes again (redelivered after its worker died before acknowledging it)
    FanoutChunk.objects.filter(pk__in=chunk_ids).update(done_at=None)
    for chunk_id in chunk_ids:
        fanout_chunk_run(chunk_id=chunk_id)

    inbox = Delivery.objects.filter(notification=notification, channel="in_app")
    assert inbox.count() == 3 and set(inbox.values_list("status", flat=True)) == {"delivered"}
    assert Delivery.objects.filter(notification=notification, channel="sms").count() == 3
