"""Played provider callbacks, verified with the providers' own verification code.

The callbacks are posted to the sandbox's own `/hooks/{name}` receiver, which records the
raw body and headers the verifiers need.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import CustomArg, Mail
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from sandbox.config import DEFAULT_SENDGRID_API_KEY, DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN
from sandbox.keys import event_webhook_public_key
from sandbox.testing import SandboxClient, SandboxProcess


def send_one_email(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> dict[str, object]:
    mail = Mail("noreply@signalbox.test", "ada@example.com", "Hi", "x")
    mail.custom_arg = CustomArg("delivery_id", "d-1")
    SendGridAPIClient(DEFAULT_SENDGRID_API_KEY, host=sandbox.http_url).send(mail)
    [message] = sandbox_client.messages("sendgrid")
    return message


def test_sendgrid_events_are_signed_so_event_webhook_verifies_them(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    message = send_one_email(sandbox, sandbox_client)

    result = sandbox_client.sendgrid_callback(
        f"{sandbox.http_url}/hooks/sendgrid-events",
        [
            {"event": "delivered", "sandbox_message_id": message["id"]},
            {"event": "open", "sandbox_message_id": message["id"], "sg_event_id": "replayed-event"},
        ],
    )

    assert result["status"] == 200
    [received] = sandbox_client.messages("webhook")
    headers = received["headers"]
    public_key = sandbox_client.keys()["sendgrid_event_webhook_public_key"]
    verifier = EventWebhook(public_key)
    assert verifier.verify_signature(
        received["text"],
        headers["X-Twilio-Email-Event-Webhook-Signature"],
        headers["X-Twilio-Email-Event-Webhook-Timestamp"],
    )
    assert not verifier.verify_signature(
        received["text"].replace("open", "click"),
        headers["X-Twilio-Email-Event-Webhook-Signature"],
        headers["X-Twilio-Email-Event-Webhook-Timestamp"],
    )
    delivered, opened = json.loads(received["text"])
    assert delivered["email"] == "ada@example.com"
    assert delivered["delivery_id"] == "d-1"
    assert delivered["sg_message_id"].startswith(message["provider_message_id"])
    assert delivered["sg_event_id"] != opened["sg_event_id"]
    assert opened["sg_event_id"] == "replayed-event"


def test_the_event_key_derives_from_a_settable_seed(sandbox_client: SandboxClient) -> None:
    default_key = sandbox_client.keys()["sendgrid_event_webhook_public_key"]

    changed = sandbox_client.set_event_key_seed("another-seed")

    assert default_key == event_webhook_public_key("signalbox-sandbox")
    assert changed["sendgrid_event_webhook_public_key"] == event_webhook_public_key("another-seed")
    assert default_key.startswith("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
    sandbox_client.set_event_key_seed("signalbox-sandbox")


def test_twilio_status_callbacks_validate_with_request_validator(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    callback_url = f"{sandbox.http_url}/hooks/twilio-status?tenant=acme"
    twilio = Client(DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN)
    twilio.api.base_url = sandbox.http_url
    sent = twilio.messages.create(to="+14155550100", from_="+15005550006", body="hi", status_callback=callback_url)

    result = sandbox_client.twilio_callback(message_sid=sent.sid, status="undelivered", error_code=30003)

    assert result["status"] == 200
    [received] = sandbox_client.messages("webhook")
    params = dict(parse_qsl(received["text"]))
    assert params["MessageSid"] == sent.sid
    assert params["MessageStatus"] == "undelivered"
    assert params["ErrorCode"] == "30003"
    signature = received["headers"]["X-Twilio-Signature"]
    assert RequestValidator(DEFAULT_TWILIO_AUTH_TOKEN).validate(callback_url, params, signature)
    assert not RequestValidator("another-token").validate(callback_url, params, signature)


def test_a_twilio_callback_can_be_played_with_explicit_params(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    url = f"{sandbox.http_url}/hooks/twilio-inbound"

    sandbox_client.twilio_callback(url, params={"From": "+14155550100", "Body": "STOP"}, auth_token="tenant-token")

    [received] = sandbox_client.messages("webhook")
    params = dict(parse_qsl(received["text"]))
    assert RequestValidator("tenant-token").validate(url, params, received["headers"]["X-Twilio-Signature"])
