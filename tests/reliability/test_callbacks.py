"""Provider status callbacks: SendGrid's signed Event Webhook and Twilio's signed status callbacks
move deliveries forward only, once per event, and feed the suppression list; forged, stale and
replayed requests change nothing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from django.test import Client
from twilio.request_validator import RequestValidator

from apps.notifications.models import Delivery, Notification, Suppression
from apps.providers.models import ProviderEvent
from apps.providers.services import provider_config_create
from sandbox import config as sandbox_config
from sandbox.keys import event_webhook_public_key, sign_event_webhook
from sandbox.testing import SandboxClient
from tests.reliability.conftest import people, send
from tests.reliability.test_provider_outcomes import run

SEED = sandbox_config.DEFAULT_EVENT_KEY_SEED
EVENTS_URL = "/callbacks/sendgrid/events"


@pytest.fixture(autouse=True)
def event_key(settings: Any) -> None:
    settings.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = event_webhook_public_key(SEED)


def post_events(events: list[dict[str, Any]], *, seed: str = SEED, timestamp: float | None = None) -> Any:
    body = json.dumps(events).encode()
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    return Client().post(
        EVENTS_URL,
        data=body,
        content_type="application/json",
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=sign_event_webhook(seed, stamp, body),
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=stamp,
    )


def event(delivery: Delivery, kind: str, **fields: Any) -> dict[str, Any]:
    """An event as SendGrid sends it: our custom args at the top level."""
    return {
        "event": kind,
        "email": delivery.rendered["to"] if delivery.rendered else "",
        "timestamp": int(time.time()),
        "sg_event_id": uuid.uuid4().hex[:22],
        "sg_message_id": f"{delivery.provider_message_id}.filter0001",
        "idempotency_key": str(delivery.pk),
        "tenant_id": str(delivery.tenant_id),
        **fields,
    }


def sent_emails(tenant: Any, n: int = 3) -> list[Delivery]:
    notification = send(tenant, people(n), ["email"])
    run(notification)
    deliveries = list(Delivery.objects.filter(notification=notification).order_by("recipient__external_id"))
    assert {(d.status, d.provider) for d in deliveries} == {("sent", "sendgrid")}
    return deliveries


@pytest.mark.django_db
def test_sendgrid_events_move_deliveries_forward_once_and_feed_the_suppression_list(
    sandboxed: Any, sandbox_client: SandboxClient
):
    ada, bob, cy = sent_emails(sandboxed)
    events = [
        event(ada, "processed"),
        event(ada, "delivered"),
        event(bob, "bounce", type="bounce", reason="550 5.1.1 The email account does not exist"),
        event(cy, "delivered"),
        event(cy, "spamreport"),
        event(cy, "open"),
    ]

    answer = post_events(events)

    assert answer.status_code == 200, answer.content
    assert answer.json() == {"applied": 4, "duplicates": 0, "ignored": 2}
    ada.refresh_from_db()
    bob.refresh_from_db()
    cy.refresh_from_db()
    assert (ada.status, bob.status, cy.status) == ("delivered", "bounced", "delivered")
    assert bob.error_code == "bounce" and "does not exist" in bob.last_error
    listed = {s.address: s.reason for s in Suppression.objects.filter(tenant=sandboxed, channel="email")}
    assert listed == {"p-1@example.com": "hard_bounce", "p-2@example.com": "spam_report"}

    # SendGrid retries the same request: every event is recognised, nothing changes twice
    again = post_events(events)
    assert again.json() == {"applied": 0, "duplicates": 4, "ignored": 2}
    assert ProviderEvent.objects.count() == 4

    # Out of order: a late `delivered` for the bounced one (and a bounce for a delivered one)
    late = post_events([event(bob, "delivered"), event(ada, "bounce", type="bounce")])
    assert late.json()["applied"] == 2
    bob.refresh_from_db()
    ada.refresh_from_db()
    assert (bob.status, ada.status) == ("bounced", "delivered")  # the first outcome reported stays
    # ... yet the address that bounced is listed all the same
    assert Suppression.objects.filter(tenant=sandboxed, address="p-0@example.com", reason="hard_bounce").exists()


@pytest.mark.django_db
def test_a_blocked_or_dropped_message_fails_and_only_address_problems_are_listed(
    sandboxed: Any, sandbox_client: SandboxClient
):
    ada, bob, cy = sent_emails(sandboxed)
    post_events(
        [
            event(ada, "bounce", type="blocked", reason="421 try again later"),
            event(bob, "dropped", reason="Bounced Address"),
            event(cy, "dropped", reason="Spam Content (if spam checker app enabled)"),
        ]
    )
    for delivery in (ada, bob, cy):
        delivery.refresh_from_db()
    assert [(d.status, d.error_code) for d in (ada, bob, cy)] == [
        ("failed", "blocked"),
        ("failed", "dropped"),
        ("failed", "dropped"),
    ]
    assert list(Suppression.objects.values_list("address", "reason")) == [("p-1@example.com", "hard_bounce")]


@pytest.mark.django_db
def test_forged_stale_and_malformed_event_posts_are_refused_and_change_nothing(
    sandboxed: Any, sandbox_client: SandboxClient
):
    (ada,) = sent_emails(sandboxed, 1)
    events = [event(ada, "bounce", type="bounce")]
    body = json.dumps(events).encode()
    stamp = str(int(time.time()))
    client = Client()

    forged = post_events(events, seed="someone-else")
    stale = post_events(events, timestamp=time.time() - 600)
    future = post_events(events, timestamp=time.time() + 600)
    unsigned = client.post(EVENTS_URL, data=body, content_type="application/json")
    tampered = client.post(
        EVENTS_URL,
        data=body.replace(b"bounce", b"delivered"),
        content_type="application/json",
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=sign_event_webhook(SEED, stamp, body),
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=stamp,
    )
    garbage = client.post(
        EVENTS_URL,
        data=b"{not json",
        content_type="application/json",
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE="AAAA",
        HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=stamp,
    )

    assert [(r.status_code, r.json()["code"]) for r in (forged, stale, future, unsigned, tampered, garbage)] == [
        (403, "signature_invalid"),
        (403, "signature_stale"),
        (403, "signature_stale"),
        (403, "signature_missing"),
        (403, "signature_invalid"),
        (403, "signature_invalid"),  # unparseable and unsigned: the signature is checked first
    ]
    ada.refresh_from_db()
    assert ada.status == "sent" and not Suppression.objects.exists() and not ProviderEvent.objects.exists()


@pytest.mark.django_db
def test_a_tenants_own_event_key_vouches_for_that_tenants_events_only(
    sandboxed: Any, other_tenant: Any, sandbox_client: SandboxClient, settings: Any
):
    settings.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = ""  # no environment key: only tenants' keys
    provider_config_create(
        tenant=other_tenant,
        name="sendgrid",
        provider="sendgrid",
        options={"from_email": "a@globex.test", "event_webhook_public_key": event_webhook_public_key("globex")},
        secrets={"api_key": "SG.globex"},
    )
    (acme_delivery,) = sent_emails(sandboxed, 1)
    mine = {**event(acme_delivery, "delivered"), "tenant_id": str(other_tenant.pk)}  # claims to be globex's

    # Signed with globex's key, naming acme's delivery as globex's: the tenant check refuses it
    answer = post_events([mine], seed="globex")
    assert answer.status_code == 200 and answer.json() == {"applied": 0, "duplicates": 0, "ignored": 1}
    acme_delivery.refresh_from_db()
    assert acme_delivery.status == "sent"
    # Signed with globex's key, naming acme as the tenant: not vouched for at all
    assert post_events([event(acme_delivery, "delivered")], seed="globex").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_the_event_webhook_played_by_the_sandbox_over_http_is_verified_and_applied(
    sandboxed: Any, sandbox_client: SandboxClient, live_server: Any, monkeypatch: pytest.MonkeyPatch
):
    from apps.notifications import tasks

    for task in (tasks.fan_out, tasks.fan_out_chunk, tasks.send_batch):  # this test runs the pipeline itself
        monkeypatch.setattr(task, "apply_async", lambda *args, **kwargs: None)
    (ada,) = sent_emails(sandboxed, 1)
    (recorded,) = sandbox_client.messages("sendgrid")

    played = sandbox_client.sendgrid_callback(
        f"{live_server.url}{EVENTS_URL}", [{"event": "delivered", "sandbox_message_id": recorded["id"]}]
    )

    assert played["status"] == 200, played
    ada.refresh_from_db()
    assert ada.status == "delivered" and ada.delivered_at is not None


# --- Twilio ----------------------------------------------------------------------------------------


def twilio_post(delivery: Delivery, params: dict[str, str], *, sign_url: str, token: str | None = None) -> Any:
    path = f"/callbacks/twilio/status?delivery={delivery.pk}"
    token = token or sandbox_config.DEFAULT_TWILIO_AUTH_TOKEN
    signature = RequestValidator(token).compute_signature(f"{sign_url}{path}", params)
    return Client().post(path, data=params, HTTP_X_TWILIO_SIGNATURE=signature)


def sms_params(delivery: Delivery, status: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": sandbox_config.DEFAULT_TWILIO_ACCOUNT_SID,
        "MessageSid": delivery.provider_message_id,
        "MessageStatus": status,
        "To": delivery.rendered["to"] if delivery.rendered else "",
        **extra,
    }


@pytest.mark.django_db
def test_twilio_callbacks_are_verified_on_the_public_url_a_proxy_serves_and_only_move_forward(
    sandboxed: Any, sandbox_client: SandboxClient, settings: Any
):
    settings.PUBLIC_URL = "https://notify.example.com"  # what Twilio called; the proxy forwards to testserver
    notification = send(sandboxed, people(2), ["sms"])
    run(notification)
    ada, bob = Delivery.objects.filter(notification=notification).order_by("recipient__external_id")

    # Signed over the URL the app itself sees (behind the proxy): refused
    assert twilio_post(ada, sms_params(ada, "delivered"), sign_url="http://testserver").status_code == 403
    # Signed over the public URL: accepted
    assert twilio_post(ada, sms_params(ada, "delivered"), sign_url=settings.PUBLIC_URL).status_code == 204
    # Forged with another token: refused
    forged = twilio_post(bob, sms_params(bob, "delivered"), sign_url=settings.PUBLIC_URL, token="x" * 32)
    assert forged.status_code == 403
    # The person texted STOP: undelivered with 21610 fails it and lists the number
    stop = twilio_post(bob, sms_params(bob, "undelivered", ErrorCode="21610"), sign_url=settings.PUBLIC_URL)
    assert stop.status_code == 204
    # Late and repeated callbacks change nothing
    for delivery, status in ((ada, "sent"), (ada, "failed"), (bob, "delivered"), (bob, "undelivered")):
        assert twilio_post(delivery, sms_params(delivery, status), sign_url=settings.PUBLIC_URL).status_code == 204

    ada.refresh_from_db()

    bob.refresh_from_db()
    assert (ada.status, bob.status, bob.error_code) == ("delivered", "failed", "21610")
    assert Suppression.objects.get(tenant=sandboxed, channel="sms").address == (bob.rendered or {})["to"]
    assert Notification.objects.get(pk=notification.pk).status == "completed"
