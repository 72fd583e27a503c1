"""The real Twilio SDK against the sandbox's Messages API."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from sandbox.config import DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN
from sandbox.testing import SandboxClient, SandboxProcess

SENDER = "+15005550006"


class IdempotentHttpClient(TwilioHttpClient):
    """Adds Twilio's idempotency header, which `messages.create` has no parameter for."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def request(self, method: str, url: str, *args: Any, headers: dict[str, str] | None = None, **kw: Any) -> Response:
        return super().request(
            method, url, *args, headers={**(headers or {}), "I-Twilio-Idempotency-Token": self.token}, **kw
        )


def twilio_for(
    sandbox: SandboxProcess, *, auth_token: str = DEFAULT_TWILIO_AUTH_TOKEN, http_client: TwilioHttpClient | None = None
) -> Client:
    client = Client(DEFAULT_TWILIO_ACCOUNT_SID, auth_token, http_client=http_client)
    client.api.base_url = sandbox.http_url
    return client


def test_create_message_answers_with_a_queued_message_resource(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    message = twilio_for(sandbox).messages.create(
        to="+14155550100", from_=SENDER, body="Your code is 1234", status_callback="http://127.0.0.1:9/status"
    )

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert message.to == "+14155550100"
    assert message.from_ == SENDER
    assert message.account_sid == DEFAULT_TWILIO_ACCOUNT_SID
    assert message.num_segments == "1"
    assert message.date_created is not None
    [recorded] = sandbox_client.messages("twilio")
    assert recorded["provider_message_id"] == message.sid
    assert recorded["text"] == "Your code is 1234"
    assert recorded["extra"]["status_callback"] == "http://127.0.0.1:9/status"


def test_a_messaging_service_send_is_accepted_and_can_be_fetched(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    client = twilio_for(sandbox)
    created = client.messages.create(to="+14155550100", messaging_service_sid="MG" + "1" * 32, body="hi")

    fetched = client.messages(created.sid).fetch()

    assert created.status == "accepted"
    assert fetched.sid == created.sid and fetched.body == "hi"


def test_an_invalid_to_number_raises_error_21211(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_for(sandbox).messages.create(to="12345", from_=SENDER, body="hi")

    assert caught.value.status == 400
    assert caught.value.code == 21211
    assert "not a valid phone number" in caught.value.msg
    assert sandbox_client.messages() == []


def test_a_permanent_recipient_fault_fails_every_send_to_that_number(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sandbox_client.add_fault("twilio", 21610, match="+14155550199", times=None)
    client = twilio_for(sandbox)

    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            client.messages.create(to="+14155550199", from_=SENDER, body="hi")
        assert caught.value.code == 21610
    client.messages.create(to="+14155550100", from_=SENDER, body="hi")

    assert [m["recipient"] for m in sandbox_client.messages("twilio")] == ["+14155550100"]


def test_a_wrong_auth_token_raises_error_20003(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    with pytest.raises(TwilioRestException) as caught:
        twilio_for(sandbox, auth_token="wrong").messages.create(to="+14155550100", from_=SENDER, body="hi")

    assert caught.value.status == 401
    assert caught.value.code == 20003


def test_the_idempotency_token_header_is_counted(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    client = twilio_for(sandbox, http_client=IdempotentHttpClient("delivery-7"))

    client.messages.create(to="+14155550100", from_=SENDER, body="hi")
    client.messages.create(to="+14155550100", from_=SENDER, body="hi")

    assert sandbox_client.count("twilio", "delivery-7") == 2
    assert sandbox_client.counts()["duplicates"] == {"twilio": {"delivery-7": 2}}
