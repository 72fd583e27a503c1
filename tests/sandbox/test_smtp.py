"""smtplib against the sandbox's SMTP server: recording, parsing and SMTP faults."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import pytest

from sandbox.testing import SandboxClient, SandboxProcess


def email(to: str = "ada@example.com") -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = "Welcome, Ada <3"
    message["From"] = "Signalbox <noreply@signalbox.test>"
    message["To"] = to
    message["Reply-To"] = "support@signalbox.test"
    message["Message-ID"] = "<d-1@signalbox.test>"
    message["List-Unsubscribe"] = "<https://signalbox.test/u/1>, <mailto:unsub@signalbox.test>"
    message["X-Signalbox-Delivery"] = "delivery-42"
    message.set_content("Hello Ada")
    message.add_alternative("<p>Hello <b>Ada</b></p>", subtype="html")
    return message


def test_a_text_and_html_message_is_recorded_with_its_headers(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    with smtplib.SMTP(sandbox.smtp_host, sandbox.smtp_port, timeout=5) as smtp:
        smtp.login("any-user", "any-password")
        smtp.send_message(email(), to_addrs=["ada@example.com", "bob@example.com"])

    messages = sandbox_client.messages("smtp")
    assert [m["recipient"] for m in messages] == ["ada@example.com", "bob@example.com"]
    message = messages[0]
    assert message["subject"] == "Welcome, Ada <3"
    assert message["sender"] == "noreply@signalbox.test"
    assert message["text"].strip() == "Hello Ada"
    assert message["html"].strip() == "<p>Hello <b>Ada</b></p>"
    assert message["extra"]["reply_to"] == "support@signalbox.test"
    assert message["extra"]["list_unsubscribe"].startswith("<https://signalbox.test/u/1>")
    assert message["headers"]["Message-ID"] == "<d-1@signalbox.test>"
    assert message["idempotency_key"] == "delivery-42"
    assert message["extra"]["auth_user"] == "any-user"


def test_a_permanent_fault_rejects_one_recipient_at_rcpt(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sandbox_client.add_fault("smtp", 550, match="gone@example.com")

    with smtplib.SMTP(sandbox.smtp_host, sandbox.smtp_port, timeout=5) as smtp:
        refused = smtp.send_message(email(), to_addrs=["ada@example.com", "gone@example.com"])
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            smtp.send_message(email("gone@example.com"), to_addrs=["gone@example.com"])

    assert refused["gone@example.com"][0] == 550
    assert caught.value.recipients["gone@example.com"][0] == 550
    assert [m["recipient"] for m in sandbox_client.messages("smtp")] == ["ada@example.com"]


def test_a_temporary_fault_answers_451_at_data_then_recovers(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sandbox_client.add_fault("smtp", 451, times=1)

    with smtplib.SMTP(sandbox.smtp_host, sandbox.smtp_port, timeout=5) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            smtp.send_message(email())
        smtp.send_message(email())

    assert caught.value.smtp_code == 451
    assert sandbox_client.count("smtp", "delivery-42") == 1
