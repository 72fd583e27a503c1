"""Flows run end to end through the real worker: in-app then email if unread, a digest step,
cancellation by an event or through the API, a branch woken by an email open. The clock is `now`
given to flows_advance. (Fallbacks on what providers report: test_flows_providers.py.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from apps.flows.models import FlowInstance, FlowRun
from apps.flows.services import engine
from apps.flows.services.engine import flows_advance, flows_sweep
from apps.notifications.models import Delivery, DigestWindow, Notification, Recipient
from apps.notifications.services.digests_flush import digest_windows_flush
from apps.notifications.services.inbox import inbox_mark_read
from apps.notifications.services.notifications import notification_create
from apps.providers.tracking import open_url
from tests.conftest import wait_for
from tests.flows.conftest import sent, wait_runs

pytestmark = [pytest.mark.worker]

NUDGE = {
    "key": "nudge",
    "template": "order_shipped",
    "steps": [
        {"id": "inbox", "type": "send", "channels": ["in_app"]},
        {
            "id": "check",
            "type": "branch",
            "if": {"channel": "in_app", "state": "read"},
            "wait": "30m",
            "then": "end",
            "else": "email",
        },
        {"id": "email", "type": "send", "channels": ["email"]},
        {"id": "end", "type": "exit"},
    ],
}


def test_in_app_then_email_only_for_whoever_has_not_read_it_after_30_minutes(
    worker: Any, recording_tenant: Any, make_template: Any, make_recipients: Any, api: Any
):
    # Given a template, two recipients and the flow, saved through the API
    make_template()
    ada, bob = make_recipients(2)
    assert api.post("/api/v1/flows/", NUDGE, format="json").status_code == 201

    # When a notification starts with the flow, as any notification does
    answer = api.post(
        "/api/v1/notifications/",
        {"flow": "nudge", "payload": {"order_id": "A-1"}, "recipients": ["user-0", "user-1"]},
        format="json",
    )
    assert answer.status_code == 202, answer.json()
    notification = Notification.objects.get(pk=answer.json()["id"])
    start = timezone.now()
    wait_runs(notification, "check", 2, phase="wait")  # both got the in-app item and wait for a read
    assert Delivery.objects.filter(notification=notification, channel="in_app", status="delivered").count() == 2

    # ... Ada reads it at minute 10
    inbox_mark_read(recipient=ada)
    flows_advance(now=start + timedelta(minutes=10))
    wait_runs(notification, "end", 1, status="done")
    # ... and at minute 31 Bob still has not
    flows_advance(now=start + timedelta(minutes=31))

    # Then Bob gets exactly one email, Ada none
    wait_for(lambda: len(sent("email")) == 1, timeout=20, message="one email sent")
    emails = Delivery.objects.filter(notification=notification, channel="email")
    wait_for(lambda: [(d.recipient_id, d.status) for d in emails] == [(bob.pk, "sent")], timeout=20)
    assert FlowRun.objects.get(notification_id=notification.pk, recipient=bob).status == "done"
    wait_for(lambda: Notification.objects.get(pk=notification.pk).status == "completed", timeout=20)
    flows_advance(now=start + timedelta(days=2))
    assert len(sent("email")) == 1  # nothing later sends it again

    # And each run's history says which step, when and why it branched
    runs = api.get(f"/api/v1/notifications/{notification.pk}/flow-runs/").json()["results"]
    by_recipient = {r["recipient"]: r for r in runs}
    ada_branch = [h for h in by_recipient["user-0"]["history"] if h["step"] == "check" and h["event"] == "branched"]
    assert ada_branch[0]["result"] is True and "read" in ada_branch[0]["why"]
    bob_steps = [(h["step"], h["event"]) for h in by_recipient["user-1"]["history"]]
    assert bob_steps == [
        ("inbox", "sent"),
        ("check", "waiting"),
        ("check", "branched"),
        ("email", "sent"),
        ("end", "exit"),
    ]
    # ... and so does the delivery's own detail, on the deliveries API
    email = api.get(f"/api/v1/deliveries/{emails.get().pk}/").json()
    assert email["flow_run"]["status"] == "done" and email["flow_run"]["step"] == "end"
    assert [(h["step"], h["event"]) for h in email["flow_run"]["history"]] == bob_steps
    assert (email["flow_run"]["flow"], email["flow_run"]["version"]) == ("nudge", 1)
    summary = api.get(f"/api/v1/notifications/{notification.pk}/flow/").json()
    assert summary["status"] == "finished" and summary["counts"]["end"] == {"done": 2}
    assert summary["mermaid"].startswith("flowchart TD")


def test_a_digest_step_collects_what_the_following_send_sends(
    worker: Any, recording_tenant: Any, make_template: Any, make_recipients: Any, make_flow: Any
):
    # Given a flow that collects emails for 10 minutes per recipient
    make_template(default_channels=["email"])
    make_recipients(1)
    make_flow(
        {
            "key": "collect",
            "template": "order_shipped",
            "steps": [
                {"id": "gather", "type": "digest", "window_minutes": 10, "key": "orders"},
                {"id": "mail", "type": "send", "channels": ["email"]},
            ],
        }
    )
    # When two notifications run through it for the same recipient
    first = notification_create(
        tenant=recording_tenant, flow="collect", payload={"order_id": "A-1"}, recipients=["user-0"]
    )
    second = notification_create(
        tenant=recording_tenant, flow="collect", payload={"order_id": "A-2"}, recipients=["user-0"]
    )
    for notification in (first, second):
        wait_runs(notification, "mail", 1, status="done")

    # Then both deliveries wait in one digest window, and its flush sends one email
    assert set(Delivery.objects.filter(notification__in=[first, second]).values_list("status", flat=True)) == {"digest"}
    window = DigestWindow.objects.get()
    assert window.items.count() == 2
    digest_windows_flush(window_ids=[window.pk], now=timezone.now() + timedelta(minutes=11))
    wait_for(lambda: len(sent("email")) == 1, timeout=20, message="one digest email")
    assert DigestWindow.objects.get().status == "sent"


def test_a_matching_event_cancels_the_reminder_before_it_goes_out(
    worker: Any, recording_tenant: Any, make_template: Any, make_recipients: Any, make_flow: Any, api: Any
):
    # Given a reminder 24 h later unless the order is paid
    make_template(default_channels=["email"])
    make_recipients(2)
    make_flow(
        {
            "key": "remind",
            "template": "order_shipped",
            "cancel_on": {"event_type": "order.paid", "key": "order_id"},
            "steps": [
                {"id": "later", "type": "delay", "duration": "24h"},
                {"id": "mail", "type": "send", "channels": ["email"]},
            ],
        }
    )
    paid = notification_create(
        tenant=recording_tenant, flow="remind", payload={"order_id": "A-1"}, recipients=["user-0"]
    )
    unpaid = notification_create(
        tenant=recording_tenant, flow="remind", payload={"order_id": "A-2"}, recipients=["user-1"]
    )
    start = timezone.now()
    wait_runs(paid, "later", 1, phase="wait")
    wait_runs(unpaid, "later", 1, phase="wait")

    # When order A-1 is paid (a client event through the API)
    answer = api.post("/api/v1/events/", {"type": "order.paid", "payload": {"order_id": "A-1"}}, format="json")
    assert answer.status_code in (201, 202), answer.json()

    # Then its flow and notification are cancelled, and a day later only A-2's reminder goes out
    assert FlowInstance.objects.get(pk=paid.pk).status == "cancelled"
    assert Notification.objects.get(pk=paid.pk).status == "cancelled"
    assert FlowRun.objects.get(notification_id=paid.pk).status == "cancelled"
    flows_advance(now=start + timedelta(hours=25))
    wait_for(lambda: len(sent("email")) == 1, timeout=20, message="the unpaid reminder")
    assert not Delivery.objects.filter(notification=paid).exists()
    assert Delivery.objects.get(notification=unpaid).recipient.external_id == "user-1"


SLOW = {
    "key": "slow",
    "template": "order_shipped",
    "steps": [
        {"id": "later", "type": "delay", "duration": "1h"},
        {"id": "mail", "type": "send", "channels": ["email"]},
    ],
}


def test_a_notification_cancelled_through_the_api_ends_its_waiting_runs_at_once(
    worker: Any, recording_tenant: Any, make_template: Any, make_recipients: Any, make_flow: Any, api: Any
):
    # Given three runs waiting an hour before an email
    make_template(default_channels=["email"])
    make_recipients(3)
    make_flow(SLOW)
    notification = notification_create(
        tenant=recording_tenant, flow="slow", payload={"order_id": "A-3"}, recipients=["user-0", "user-1", "user-2"]
    )
    wait_runs(notification, "later", 3, phase="wait")

    # When the notification is cancelled through the API
    assert api.post(f"/api/v1/notifications/{notification.pk}/cancel/").status_code == 200

    # Then its runs and its flow have ended already (no sweeper ran), saying why
    runs = FlowRun.objects.filter(notification_id=notification.pk)
    assert [r.status for r in runs] == ["cancelled"] * 3
    assert runs[0].history[-1]["why"] == "the notification was cancelled"
    assert FlowInstance.objects.get(pk=notification.pk).status == "cancelled"
    # ... and an hour later nothing is sent
    flows_advance(now=timezone.now() + timedelta(hours=2))
    assert not Delivery.objects.filter(notification=notification).exists()
    assert Recipient.objects.count() == 3


def test_a_cancel_ends_the_first_runs_at_once_and_the_sweeper_the_rest(
    worker: Any,
    recording_tenant: Any,
    make_template: Any,
    make_recipients: Any,
    make_flow: Any,
    api: Any,
    monkeypatch: pytest.MonkeyPatch,
):
    # Given a cancel ends 2 runs in its own transaction (10,000 normally) and 3 runs wait
    monkeypatch.setattr(engine, "CANCEL_AT_ONCE", 2)
    make_template(default_channels=["email"])
    make_recipients(3)
    make_flow(SLOW)
    notification = notification_create(
        tenant=recording_tenant, flow="slow", payload={"order_id": "A-4"}, recipients=["user-0", "user-1", "user-2"]
    )
    wait_runs(notification, "later", 3, phase="wait")

    # When it is cancelled through the API
    assert api.post(f"/api/v1/notifications/{notification.pk}/cancel/").status_code == 200

    # Then two runs ended at once, the third with the next sweep
    runs = FlowRun.objects.filter(notification_id=notification.pk)
    assert sorted(runs.values_list("status", flat=True)) == ["cancelled", "cancelled", "waiting"]
    assert flows_sweep().cancelled == 1
    assert list(runs.values_list("status", flat=True)) == ["cancelled"] * 3
    flows_advance(now=timezone.now() + timedelta(hours=2))
    assert not Delivery.objects.filter(notification=notification).exists()


def test_an_email_opened_wakes_the_branch_waiting_for_it(
    worker: Any, recording_tenant: Any, make_template: Any, make_recipients: Any, make_flow: Any
):
    # Given an email, then an SMS unless the email is opened within a day
    make_template(default_channels=["email"])
    make_recipients(2, phone="+14155550100")
    make_flow(
        {
            "key": "opened",
            "template": "order_shipped",
            "steps": [
                {"id": "mail", "type": "send", "channels": ["email"]},
                {
                    "id": "check",
                    "type": "branch",
                    "if": {"channel": "email", "state": "opened"},
                    "wait": "1d",
                    "then": "end",
                    "else": "text",
                },
                {"id": "text", "type": "send", "channels": ["sms"]},
                {"id": "end", "type": "exit"},
            ],
        }
    )
    notification = notification_create(
        tenant=recording_tenant, flow="opened", payload={"order_id": "A-5"}, recipients=["user-0", "user-1"]
    )
    start = timezone.now()
    wait_runs(notification, "check", 2, phase="wait")

    # When user-0 opens the email (its tracking pixel is fetched)
    email = Delivery.objects.get(notification=notification, channel="email", recipient__external_id="user-0")
    pixel = urlsplit(open_url(str(email.pk))).path
    assert Client().get(pixel).status_code == 200

    # Then its branch is woken and takes `then` at once (no clock moved), and it never gets the SMS
    wait_runs(notification, "end", 1, status="done")
    run = FlowRun.objects.get(notification_id=notification.pk, recipient__external_id="user-0")
    branched = [h for h in run.history if h["event"] == "branched"]
    assert branched[0]["result"] is True and "opened" in branched[0]["why"]
    # ... while user-1, who never opened it, gets the SMS once the day is over
    flows_advance(now=start + timedelta(days=1, minutes=1))
    wait_for(lambda: len(sent("sms")) == 1, timeout=20, message="one SMS")
    sms = Delivery.objects.filter(notification=notification, channel="sms")
    assert list(sms.values_list("recipient__external_id", flat=True)) == ["user-1"]
