"""Twilio's status callback, played by the sandbox against a live server: signed, forward only."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from apps.notifications.models import Category, Delivery, Notification, Recipient
from apps.providers.adapters.twilio import TwilioProvider
from apps.providers.base import Channel
from apps.providers.services import provider_config_create
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import message, sandbox_config_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sms_delivery(tenant: Any) -> Delivery:
    category = Category.objects.create(tenant=tenant, key="security")
    recipient = Recipient.objects.create(tenant=tenant, external_id="ada", phone="+14155550100")
    notification = Notification.objects.create(tenant=tenant, category=category, channels=["sms"])
    return Delivery.objects.create(
        tenant=tenant, notification=notification, recipient=recipient, channel="sms", status="sent"
    )


@pytest.fixture
def sent(live_server: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient, tenant: Any, sms_delivery: Delivery):
    """The delivery sent through the tenant's Twilio account, Signalbox's public URL being the live server."""
    config = sandbox_config_for(sandbox, "twilio")
    secrets = {"auth_token": config.pop("auth_token")}
    provider_config_create(tenant=tenant, name="twilio", provider="twilio", options=config, secrets=secrets)
    with override_settings(PUBLIC_URL=live_server.url):
        result = TwilioProvider.from_config({**config, **secrets}).send(
            message(Channel.SMS, "+14155550100", str(sms_delivery.pk), text="Code 123456")
        )
        Delivery.objects.filter(pk=sms_delivery.pk).update(provider_message_id=result.message_id)
        yield result.message_id


def test_delivered_moves_a_sent_delivery_forward_and_a_late_callback_never_back(
    sent: str, sandbox_client: SandboxClient, sms_delivery: Delivery
):
    answer = sandbox_client.twilio_callback(message_sid=sent, status="delivered")
    sandbox_client.twilio_callback(message_sid=sent, status="failed", error_code=30008)
    sandbox_client.twilio_callback(message_sid=sent, status="sent")

    assert answer["status"] == 204
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == "delivered" and sms_delivery.delivered_at is not None


def test_undelivered_fails_the_delivery_with_twilios_error_code(
    sent: str, sandbox_client: SandboxClient, sms_delivery: Delivery
):
    sandbox_client.twilio_callback(message_sid=sent, status="undelivered", error_code=30003)

    sms_delivery.refresh_from_db()
    assert (sms_delivery.status, sms_delivery.error_code) == ("failed", "30003")


def test_a_callback_signed_with_another_token_or_for_another_account_is_refused(
    sent: str, sandbox_client: SandboxClient, sms_delivery: Delivery
):
    forged = sandbox_client.twilio_callback(message_sid=sent, status="delivered", auth_token="not-the-token")
    params = {"AccountSid": "AC" + "f" * 32, "MessageSid": sent, "MessageStatus": "delivered"}
    foreign = sandbox_client.twilio_callback(message_sid=sent, params=params)

    assert (forged["status"], foreign["status"]) == (403, 403)
    sms_delivery.refresh_from_db()
    assert sms_delivery.status == "sent"
