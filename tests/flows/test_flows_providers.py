"""Fallbacks driven by what real providers report: the provider sandbox takes the email (SendGrid)
and the SMS (Twilio), a bounce arrives as SendGrid's signed Event Webhook played by the sandbox,
and an email the provider keeps refusing with 5xx goes dead after its attempts. In each case the
SMS follows, once, and only for that recipient."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.flows.models import FlowRun
from apps.flows.services.engine import flows_advance
from apps.notifications.models import Delivery, Notification
from apps.notifications.services.dispatch import dispatch_due
from apps.notifications.services.notifications import notification_create
from sandbox import config as sandbox_config
from sandbox.keys import event_webhook_public_key
from sandbox.testing import SandboxClient
from tests.conftest import wait_for
from tests.flows.conftest import wait_runs
from tests.reliability.conftest import sandbox, sandbox_client, sandboxed

__all__ = ["sandbox", "sandbox_client", "sandboxed"]

pytestmark = [pytest.mark.worker]

FALLBACK = {
    "key": "reach",
    "template": "order_shipped",
    "steps": [{"id": "reach", "type": "fallback", "channels": ["email", "sms"], "wait": "1h"}],
}
EVENTS_URL = "/callbacks/sendgrid/events"


@pytest.fixture(autouse=True)
def event_key(settings: Any) -> None:
    """The receiver trusts the key the sandbox signs its Event Webhook posts with."""
    settings.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = event_webhook_public_key(sandbox_config.DEFAULT_EVENT_KEY_SEED)


def sms_to(notification: Any) -> set[str]:
    rows = Delivery.objects.filter(notification=notification, channel="sms")
    return set(rows.values_list("recipient__external_id", flat=True))


def runs_open(notification: Any) -> bool:
    return FlowRun.objects.filter(notification_id=notification.pk, status__in=FlowRun.ACTIVE).exists()


def test_a_bounce_reported_by_sendgrids_event_webhook_sends_the_sms_at_once(
    worker: Any,
    sandboxed: Any,
    sandbox_client: SandboxClient,
    live_server: Any,
    make_template: Any,
    make_recipients: Any,
    make_flow: Any,
    api: Any,
):
    # Given a fallback flow (email, then SMS if the email fails within an hour), two recipients
    # with both addresses and one without an email
    make_template(default_channels=["email"])
    make_recipients(2, phone="+14155550100")
    make_recipients(1, prefix="nomail", phone="+14155550101", email="")
    make_flow(FALLBACK)
    answer = api.post(
        "/api/v1/notifications/",
        {"flow": "reach", "payload": {"order_id": "A-2"}, "recipients": ["user-0", "user-1", "nomail-0"]},
        format="json",
    )
    assert answer.status_code == 202, answer.json()
    notification = Notification.objects.get(pk=answer.json()["id"])
    start = timezone.now()
    wait_runs(notification, "reach.email-failed", 2, phase="wait")
    emails = sandbox_client.wait_for_messages(2, "sendgrid", timeout=20)
    assert sms_to(notification) == {"nomail-0"}  # no address: suppressed, so the SMS went at once

    # When SendGrid reports that user-1's email bounced (its signed Event Webhook, played by the sandbox)
    (bounced,) = [m for m in emails if m["recipient"] == "user-1@example.com"]
    played = sandbox_client.sendgrid_callback(
        f"{live_server.url}{EVENTS_URL}",
        [
            {
                "event": "bounce",
                "type": "bounce",
                "reason": "550 5.1.1 no such user",
                "sandbox_message_id": bounced["id"],
            }
        ],
    )
    assert played["status"] == 200, played

    # Then user-1's email is bounced and its SMS goes at once (the bounce woke its branch), not user-0's
    delivery = Delivery.objects.get(notification=notification, channel="email", recipient__external_id="user-1")
    assert delivery.status == "bounced"
    wait_for(lambda: sms_to(notification) == {"user-1", "nomail-0"}, timeout=20, message="SMS for user-1")
    sandbox_client.wait_for_messages(2, "twilio", timeout=20)
    # ... and once user-0's hour is over without a failure, its run ends with no SMS
    flows_advance(now=start + timedelta(hours=2))
    wait_for(lambda: not runs_open(notification), timeout=20, message="every run ended")
    assert sms_to(notification) == {"user-1", "nomail-0"}
    assert sorted(m["recipient"] for m in sandbox_client.messages("twilio")) == ["+14155550100", "+14155550101"]
    history = FlowRun.objects.get(notification_id=notification.pk, recipient__external_id="user-1").history
    branched = [h for h in history if h["step"] == "reach.email-failed" and h["event"] == "branched"]
    assert branched[0]["result"] is True and "bounced" in branched[0]["why"]


def test_an_email_the_provider_keeps_refusing_goes_dead_and_the_sms_follows(
    worker: Any, sandboxed: Any, sandbox_client: SandboxClient, make_template: Any, make_recipients: Any, make_flow: Any
):
    # Given both email providers answer 5xx for user-1's address, for good (the tenant retries 4
    # times, a fraction of a second apart), and the fallback flow
    sandbox_client.add_fault("sendgrid", 503, match="user-1@example.com")
    sandbox_client.add_fault("smtp", 451, match="user-1@example.com")
    make_template(default_channels=["email"])
    make_recipients(2, phone="+14155550100")
    make_flow(FALLBACK)
    notification = notification_create(
        tenant=sandboxed, flow="reach", payload={"order_id": "A-3"}, recipients=["user-0", "user-1"]
    )
    start = timezone.now()
    wait_runs(notification, "reach.email-failed", 2, phase="wait")

    # When its retries are due (the dispatcher, run with the clock ahead) until its attempts run out
    email = Delivery.objects.filter(notification=notification, channel="email", recipient__external_id="user-1")

    def dead() -> bool:
        dispatch_due(now=timezone.now() + timedelta(hours=1))
        return email.get().status == "dead"

    wait_for(dead, timeout=30, interval=0.3, message="user-1's email dead")

    # Then the SMS goes to user-1 (the dead email woke its branch, well before the hour), once
    assert email.get().attempts == 4
    wait_for(lambda: sms_to(notification) == {"user-1"}, timeout=20, message="SMS for user-1")
    wait_for(lambda: len(sandbox_client.messages("twilio")) == 1, timeout=20, message="one SMS at the provider")
    # ... user-0's email was sent, and at the end of the hour its run ends with no SMS
    assert Delivery.objects.get(notification=notification, channel="email", recipient__external_id="user-0").status in (
        "sent",
        "delivered",
    )
    flows_advance(now=start + timedelta(hours=2))
    wait_for(lambda: not runs_open(notification), timeout=20, message="every run ended")
    assert sms_to(notification) == {"user-1"}
    assert [m["recipient"] for m in sandbox_client.messages("twilio")] == ["+14155550100"]
