"""smtplib against the sandbox's SMTP server: recording, parsing and SMTP faults."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from sandbox.smtp import PipeliningSMTP, RecordingHandler, identity
from sandbox.state import Store
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


def test_a_message_body_is_parsed_when_first_read_once_for_all_its_recipients() -> None:
    store = Store()
    raw = email().as_bytes()
    envelope = SimpleNamespace(rcpt_tos=["ada@example.com", "bob@example.com"], original_content=raw, mail_from="n@s.t")
    answer = asyncio.run(RecordingHandler(store).handle_DATA(None, SimpleNamespace(), envelope))  # type: ignore[arg-type]

    assert answer.startswith("250")
    ada, bob = store.messages
    # On arrival: who, which message, which delivery; the body not yet.
    assert (ada.provider_message_id, ada.idempotency_key) == ("<d-1@signalbox.test>", "delivery-42")
    assert ada.pending is not None and ada.subject is None and ada.text is None
    # The first reader gets everything, and the one parse serves both recipients.
    assert ada.to_dict()["subject"] == "Welcome, Ada <3" and ada.to_dict()["extra"]["size"] == len(raw)
    parse: Any = bob.pending
    assert (bob.complete().text or "").strip() == "Hello Ada"
    assert (parse.cache_info().misses, parse.cache_info().hits) == (1, 1)


def test_pipelined_commands_are_offered_and_answered_together(sandbox: SandboxProcess) -> None:
    # Given a connection that greeted with EHLO: the server offers PIPELINING
    with smtplib.SMTP(sandbox.smtp_host, sandbox.smtp_port, timeout=5) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("pipelining")
        assert smtp.sock is not None

        # When MAIL, RCPT and DATA go in one write
        smtp.sock.sendall(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")

        # Then their three answers come back together, in order, in one read
        smtp.sock.settimeout(5)
        answers = smtp.sock.recv(65536)
        assert [line[:3] for line in answers.splitlines()] == [b"250", b"250", b"354"]
        smtp.sock.sendall(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        assert smtp.getreply()[0] == 250


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: a\r\nMessage-ID: <m-1@x.test>\r\nX-Signalbox-Delivery: d-1\r\n\r\nMessage-ID: <body@x.test>\r\n",
        b"x-signalbox-delivery:d-1\nMESSAGE-ID:   <m-1@x.test>  \n\nbody\n",
        b"Message-ID:\r\n <m-1@x.test>\r\nX-Signalbox-Delivery: d-1\r\n\r\nbody",
        b"Subject: no identity\r\n\r\nX-Signalbox-Delivery: d-9\r\n",
    ],
)
def test_a_message_is_recorded_by_the_headers_a_parser_reads(raw: bytes) -> None:
    parsed = BytesHeaderParser().parsebytes(raw)
    expected = (str(parsed.get("Message-ID") or ""), str(parsed.get("X-Signalbox-Delivery") or ""))
    assert identity(raw) == expected


@pytest.mark.parametrize(
    "arg", ["<ada@example.com>", "<ada@example.com> SIZE=1000", '<"odd local"@example.com>', "<>", "ada@example.com"]
)
def test_an_smtp_path_reads_as_aiosmtpd_reads_it(arg: str) -> None:
    server = PipeliningSMTP(RecordingHandler(Store(None)))
    assert server._getaddr(arg) == SMTP._getaddr(server, arg)
