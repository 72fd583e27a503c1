"""Twilio through its SDK into the sandbox: sender, status callback, idempotency token, error codes."""

from __future__ import annotations

import time

from django.conf import settings

from apps.providers.adapters.twilio import TwilioProvider
from apps.providers.base import Channel, Outcome
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import message, sandbox_config_for


def sms(to: str = "+14155550100", key: str = "delivery-1", text: str = "Your code is 123456"):
    return message(Channel.SMS, to, key, text=text)


def test_a_text_is_sent_from_the_number_with_signalbox_as_status_callback(
    twilio: TwilioProvider, sandbox_client: SandboxClient
):
    result = twilio.send(sms())

    assert result.outcome is Outcome.ACCEPTED
    assert result.message_id.startswith("SM") and result.detail == "queued"
    [received] = sandbox_client.messages("twilio")
    assert received["recipient"] == "+14155550100"
    assert received["sender"] == "+15005550006"
    assert received["text"] == "Your code is 123456"
    assert received["extra"]["status_callback"] == f"{settings.PUBLIC_URL}/callbacks/twilio/status?delivery=delivery-1"
    assert received["idempotency_key"] == "delivery-1"
    assert received["provider_message_id"] == result.message_id


def test_a_messaging_service_picks_the_sender(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    provider = TwilioProvider.from_config(
        sandbox_config_for(sandbox, "twilio", from_number="", messaging_service_sid="MG" + "0" * 32)
    )

    result = provider.send(sms())

    assert (result.outcome, result.detail) == (Outcome.ACCEPTED, "accepted")
    assert sandbox_client.messages("twilio")[0]["extra"]["form"]["MessagingServiceSid"] == "MG" + "0" * 32


def test_twilio_error_codes_are_permanent_with_the_code(twilio: TwilioProvider, sandbox_client: SandboxClient):
    for number, code in (("+14155550199", 21211), ("+14155550198", 21610), ("+14155550197", 21614)):
        sandbox_client.add_fault("twilio", code, match=number)
        result = twilio.send(sms(number))
        assert (result.outcome, result.code, result.status_code) == (Outcome.PERMANENT, str(code), 400)
    assert sandbox_client.messages("twilio") == []


def test_an_invalid_number_is_refused_as_twilio_refuses_it(twilio: TwilioProvider):
    result = twilio.send(sms("555-0100"))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "21211")


def test_rate_limits_and_server_errors_are_transient(twilio: TwilioProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("twilio", 429, retry_after=12, times=1)
    sandbox_client.add_fault("twilio", 503, times=1)

    limited = twilio.send(sms())
    unavailable = twilio.send(sms())

    assert (limited.outcome, limited.code, limited.retry_after) == (Outcome.TRANSIENT, "20429", 12.0)
    assert (unavailable.outcome, unavailable.code) == (Outcome.TRANSIENT, "20503")


def test_wrong_credentials_are_permanent(sandbox: SandboxProcess):
    provider = TwilioProvider.from_config(sandbox_config_for(sandbox, "twilio", auth_token="wrong"))

    result = provider.send(sms())

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "auth_failed")


def test_a_lost_answer_is_transient_and_the_retry_carries_the_same_token(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    sandbox_client.add_fault("twilio", timeout=3, times=1)
    provider = TwilioProvider.from_config(sandbox_config_for(sandbox, "twilio", timeout=0.5))

    started = time.monotonic()
    first = provider.send(sms())
    second = provider.send(sms())

    assert (first.outcome, first.code) == (Outcome.TRANSIENT, "timeout")
    assert time.monotonic() - started < 2.5
    assert second.outcome is Outcome.ACCEPTED
    assert [r["idempotency_key"] for r in sandbox_client.requests("twilio")] == ["delivery-1", "delivery-1"]
