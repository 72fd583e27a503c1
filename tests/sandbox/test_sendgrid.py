"""The real SendGrid SDK against the sandbox's `/v3/mail/send`."""

from __future__ import annotations

import json
import time

import pytest
from python_http_client.exceptions import BadRequestsError, TooManyRequestsError, UnauthorizedError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Header, Mail, Personalization, To

from sandbox.config import DEFAULT_SENDGRID_API_KEY
from sandbox.testing import SandboxClient, SandboxProcess


def client_for(sandbox: SandboxProcess, api_key: str = DEFAULT_SENDGRID_API_KEY) -> SendGridAPIClient:
    return SendGridAPIClient(api_key=api_key, host=sandbox.http_url)


def test_single_send_is_accepted_with_a_message_id(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    mail = Mail(
        from_email="noreply@signalbox.test",
        to_emails="ada@example.com",
        subject="Your receipt",
        plain_text_content="Thanks!",
        html_content="<p>Thanks!</p>",
    )
    mail.custom_arg = CustomArg("idempotency_key", "delivery-1")
    mail.header = Header("List-Unsubscribe", "<https://signalbox.test/u/1>")

    response = client_for(sandbox).send(mail)

    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers["X-Message-Id"]
    [message] = sandbox_client.messages("sendgrid")
    assert message["recipient"] == "ada@example.com"
    assert message["provider_message_id"] == message_id
    assert message["subject"] == "Your receipt"
    assert message["text"] == "Thanks!"
    assert message["html"] == "<p>Thanks!</p>"
    assert message["headers"]["List-Unsubscribe"] == "<https://signalbox.test/u/1>"
    assert message["idempotency_key"] == "delivery-1"
    assert message["channel"] == "email"


def test_bulk_send_records_one_message_per_personalization(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    mail = Mail(from_email="noreply@signalbox.test", subject="Weekly digest", plain_text_content="News")
    for n in range(3):
        personalization = Personalization()
        personalization.add_to(To(f"user{n}@example.com"))
        personalization.add_custom_arg(CustomArg("idempotency_key", f"delivery-{n}"))
        mail.add_personalization(personalization)

    response = client_for(sandbox).send(mail)

    assert response.status_code == 202
    # The SDK inserts each personalization first, so compare without order.
    messages = sandbox_client.messages("sendgrid")
    assert sorted((m["recipient"], m["idempotency_key"]) for m in messages) == [
        ("user0@example.com", "delivery-0"),
        ("user1@example.com", "delivery-1"),
        ("user2@example.com", "delivery-2"),
    ]
    assert len({m["provider_message_id"] for m in messages}) == 1
    assert sandbox_client.count("sendgrid", "delivery-1") == 1


def test_missing_personalizations_are_rejected_in_sendgrids_error_shape(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    body = {"from": {"email": "noreply@signalbox.test"}, "subject": "Hi", "content": [{"type": "text/plain"}]}

    with pytest.raises(BadRequestsError) as caught:
        client_for(sandbox).send(body)

    errors = json.loads(caught.value.body)["errors"]
    assert {e["field"] for e in errors} == {"personalizations", "content.0.value"}
    assert all(set(e) == {"message", "field", "help"} for e in errors)
    assert sandbox_client.messages() == []


def test_an_invalid_recipient_address_names_the_field(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    body = {
        "personalizations": [{"to": [{"email": "not-an-address"}]}],
        "from": {"email": "noreply@signalbox.test"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "x"}],
    }

    with pytest.raises(BadRequestsError) as caught:
        client_for(sandbox).send(body)

    [error] = json.loads(caught.value.body)["errors"]
    assert error["field"] == "personalizations.0.to.0.email"
    assert error["message"] == "Does not contain a valid address."


def test_a_wrong_api_key_is_refused(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    mail = Mail("noreply@signalbox.test", "ada@example.com", "Hi", "x")

    with pytest.raises(UnauthorizedError) as caught:
        client_for(sandbox, api_key="SG.wrong").send(mail)

    assert json.loads(caught.value.body)["errors"][0]["message"].startswith("The provided authorization grant")
    assert sandbox_client.messages() == []


def test_a_rate_limit_fault_answers_429_with_rate_limit_headers(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sandbox_client.add_fault("sendgrid", 429, retry_after=7, times=1)
    mail = Mail("noreply@signalbox.test", "ada@example.com", "Hi", "x")

    with pytest.raises(TooManyRequestsError) as caught:
        client_for(sandbox).send(mail)
    retry = client_for(sandbox).send(mail)

    headers = caught.value.headers
    assert headers["Retry-After"] == "7"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["X-RateLimit-Limit"] == "600"
    assert int(headers["X-RateLimit-Reset"]) >= int(time.time()) + 5
    assert retry.status_code == 202
    assert [r["status"] for r in sandbox_client.requests("sendgrid")] == [429, 202]


def test_substitutions_apply_per_personalization_to_subject_content_and_reply_to(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    body = {
        "from": {"email": "noreply@signalbox.test"},
        "reply_to": {"email": "-name-@signalbox.test"},
        "subject": "Hi -name-",
        "content": [
            {"type": "text/plain", "value": "Hi -name-, -city-."},
            {"type": "text/html", "value": "<p>-name-</p>"},
        ],
        "personalizations": [
            {"to": [{"email": "ada@example.com"}], "substitutions": {"-name-": "Ada", "-city-": "Lyon"}},
            # A value holding another tag is put in as it is, never substituted again.
            {"to": [{"email": "bob@example.com"}], "substitutions": {"-name-": "Bob -city-", "-city-": "Oslo"}},
        ],
    }

    response = client_for(sandbox).client.mail.send.post(request_body=body)

    assert response.status_code == 202
    got = {m["recipient"]: m for m in sandbox_client.messages("sendgrid")}
    assert (got["ada@example.com"]["subject"], got["ada@example.com"]["text"]) == ("Hi Ada", "Hi Ada, Lyon.")
    assert got["ada@example.com"]["extra"]["reply_to"] == "Ada@signalbox.test"
    assert got["bob@example.com"]["text"] == "Hi Bob -city-, Oslo."
    assert got["bob@example.com"]["html"] == "<p>Bob -city-</p>"
