"""SMTP through Django's email backend into the sandbox: parts, headers, idempotency key, reply codes."""

from __future__ import annotations

import smtplib
import socket
import time
from email import policy
from email.parser import BytesParser

import pytest
from django.conf import settings

from apps.providers.adapters.smtp import SmtpProvider, _Session
from apps.providers.base import Channel, Outcome
from apps.providers.email import compose
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import count_smtp_connections, message, sandbox_config_for


def email(to: str = "ada@example.com", key: str = "delivery-1", **fields):
    defaults = {"subject": "Your order shipped", "text": "It is on its way.", "html": "<p>It is <b>on its way</b>.</p>"}
    return message(Channel.EMAIL, to, key, **{**defaults, **fields})


def test_a_message_arrives_with_both_parts_reply_to_and_headers(smtp: SmtpProvider, sandbox_client: SandboxClient):
    result = smtp.send(email(reply_to="support@acme.test", headers={"X-Campaign": "spring"}))

    assert result.outcome is Outcome.ACCEPTED
    [received] = sandbox_client.messages("smtp")
    assert received["recipient"] == "ada@example.com"
    assert received["sender"] == "noreply@acme.test"
    assert received["subject"] == "Your order shipped"
    assert received["text"].strip() == "It is on its way."
    assert received["html"].strip() == "<p>It is <b>on its way</b>.</p>"
    assert received["headers"]["Reply-To"] == "support@acme.test"
    assert received["headers"]["X-Campaign"] == "spring"
    assert received["headers"]["X-Signalbox-Delivery"] == "delivery-1"
    assert received["idempotency_key"] == "delivery-1"
    assert received["provider_message_id"] == result.message_id


def test_an_html_only_message_gets_a_text_part(smtp: SmtpProvider, sandbox_client: SandboxClient):
    smtp.send(email(text="", html="<html><body><h1>Hello</h1><p>Ada &amp; Bob</p></body></html>"))

    [received] = sandbox_client.messages("smtp")
    assert "Hello" in received["text"] and "Ada & Bob" in received["text"]
    assert "<h1>Hello</h1>" in received["html"]


def test_one_click_unsubscribe_headers_point_at_signalbox(smtp: SmtpProvider, sandbox_client: SandboxClient):
    smtp.send(email(recipient_id="ada", category="orders", list_unsubscribe=True))

    headers = sandbox_client.messages("smtp")[0]["headers"]
    assert headers["List-Unsubscribe"].strip().startswith(f"<{settings.PUBLIC_URL}/u/")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_sends_in_a_session_share_one_connection_and_a_refused_recipient_fails_alone(
    smtp: SmtpProvider, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    sandbox_client.add_fault("smtp", 550, match="gone@example.com")
    connections = count_smtp_connections(monkeypatch)

    with smtp.session():
        results = [
            smtp.send(email("ada@example.com", "d-1")),
            smtp.send(email("gone@example.com", "d-2")),
            smtp.send(email("bob@example.com", "d-3")),
        ]

    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.PERMANENT, Outcome.ACCEPTED]
    assert results[1].code == "550"
    assert [m["recipient"] for m in sandbox_client.messages("smtp")] == ["ada@example.com", "bob@example.com"]
    assert len(connections) == 1


def test_each_send_outside_a_session_has_its_own_connection(
    smtp: SmtpProvider, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    connections = count_smtp_connections(monkeypatch)

    smtp.send(email("ada@example.com", "d-1"))
    smtp.send(email("bob@example.com", "d-2"))

    assert len(connections) == 2
    assert len(sandbox_client.messages("smtp")) == 2


def test_a_550_is_permanent_and_a_451_transient(smtp: SmtpProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("smtp", 550, match="gone@example.com")
    sandbox_client.add_fault("smtp", 451, match="busy@example.com")

    gone = smtp.send(email("gone@example.com"))
    busy = smtp.send(email("busy@example.com"))

    assert (gone.outcome, gone.code) == (Outcome.PERMANENT, "550")
    assert (busy.outcome, busy.code) == (Outcome.TRANSIENT, "451")
    assert sandbox_client.messages("smtp") == []


def test_a_rejected_data_phase_is_classified_by_its_code(smtp: SmtpProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("smtp", 554, times=1)

    result = smtp.send(email())

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "554")


def test_a_server_that_does_not_answer_in_time_is_transient(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    sandbox_client.add_fault("smtp", timeout=3)
    provider = SmtpProvider.from_config(sandbox_config_for(sandbox, "smtp", timeout=0.5))

    started = time.monotonic()
    result = provider.send(email())

    assert result.outcome is Outcome.TRANSIENT
    assert result.code == "timeout"
    assert time.monotonic() - started < 2.5


def test_after_a_lost_connection_the_rest_of_the_session_fails_at_once_as_transient(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    sandbox_client.add_fault("smtp", timeout=3, times=1)
    provider = SmtpProvider.from_config(sandbox_config_for(sandbox, "smtp", timeout=0.5))

    started = time.monotonic()
    with provider.session():
        results = [provider.send(email("a@example.com", "d-1")), provider.send(email("b@example.com", "d-2"))]

    assert [(r.outcome, r.code) for r in results] == [
        (Outcome.TRANSIENT, "timeout"),
        (Outcome.TRANSIENT, "disconnected"),
    ]
    assert time.monotonic() - started < 2.5


def test_a_refused_connection_is_transient_and_not_tried_again_in_the_session(monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    provider = SmtpProvider.from_config({"host": "127.0.0.1", "port": closed_port, "from_email": "a@acme.test"})
    connections = count_smtp_connections(monkeypatch)

    with provider.session():
        results = [provider.send(email("a@example.com", "d-1")), provider.send(email("b@example.com", "d-2"))]

    assert [r.outcome for r in results] == [Outcome.TRANSIENT, Outcome.TRANSIENT]
    assert [r.code for r in results] == ["connection_error", "connection_error"]
    assert len(connections) == 1


def test_health_check_is_a_noop_on_a_live_connection(smtp: SmtpProvider):
    health = smtp.check()

    assert health.ok, health.detail


def test_a_pipelined_message_keeps_a_body_line_that_starts_with_a_period(
    smtp: SmtpProvider, sandbox_client: SandboxClient
):
    # Given a relay that offers PIPELINING (the sandbox does) and a text whose lines start with periods
    text = "Totals:\n.\n..two\n.end"

    # When it is sent
    result = smtp.send(email(text=text))

    # Then it arrived with its lines as written (dot-stuffed on the wire, unstuffed by the relay)
    assert result.accepted
    [message] = sandbox_client.messages("smtp")
    assert message["text"].replace("\r\n", "\n").rstrip("\n") == text


def test_without_pipelining_offered_each_command_waits_for_its_answer(
    smtp: SmtpProvider, sandbox_client: SandboxClient, monkeypatch: pytest.MonkeyPatch
):
    # Given a relay that does not offer PIPELINING, and one recipient it refuses
    has_extn = smtplib.SMTP.has_extn
    monkeypatch.setattr(smtplib.SMTP, "has_extn", lambda self, name: name != "pipelining" and has_extn(self, name))
    sandbox_client.add_fault("smtp", 550, match="gone@example.com")

    # When two messages are sent in one session
    with smtp.session():
        refused = smtp.send(email(to="gone@example.com", key="d-1"))
        sent = smtp.send(email(to="bob@example.com", key="d-2"))

    # Then smtplib's own exchange classified them the same way
    assert refused.outcome is Outcome.PERMANENT and refused.code == "550"
    assert sent.accepted
    assert [m["recipient"] for m in sandbox_client.messages("smtp")] == ["bob@example.com"]


@pytest.mark.parametrize("connections", [0, 17, "4", True])
def test_a_connection_count_outside_1_to_16_is_refused(connections: object):
    errors = SmtpProvider.validate_config({"from_email": "a@example.com", "connections": connections})
    assert errors == {"connections": ["A whole number from 1 to 16."]}
    assert SmtpProvider.validate_config({"from_email": "a@example.com", "connections": 16}) == {}


KINDS: dict[str, dict[str, object]] = {
    "text and html": {},
    "html only": {"text": ""},
    "tracked opens and clicks": {
        "html": '<p>Read <a href="https://acme.test/a">this</a> and <a href="https://acme.test/b">that</a>.</p>',
        "track_opens": True,
        "track_clicks": True,
    },
    "non-ASCII subject and body": {
        "subject": "Ihre Bestellung: Größe 42 ✓",
        "text": "Grüße, Zoë",
        "html": "<p>Grüße</p>",
    },
    "a line past 998 characters": {"text": "x" * 1200},
}


def parsed(raw: bytes) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Headers (less Date, Message-ID and the multipart boundary, which differ per build; folding
    whitespace aside) and each part's type and content."""
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    headers = {k: str(v).strip() for k, v in mail.items() if k not in {"Date", "Message-ID"}}
    headers["Content-Type"] = mail.get_content_type()
    parts = [(p.get_content_type(), p.get_content()) for p in mail.walk() if not p.is_multipart()]
    return headers, parts


@pytest.mark.parametrize("kind", KINDS)
def test_a_message_from_its_contents_template_reads_as_the_one_django_builds(smtp: SmtpProvider, kind: str):
    # Given a message for recipient 7 with an unsubscribe link, of each kind of content
    fields = {"recipient_id": "7", "category": "orders", "list_unsubscribe": True, **KINDS[kind]}
    one = email(to="ada@example.com", key="d-1", **fields)

    # When its bytes are made in a session (from the content's template where it can be) and by Django alone
    session = _Session()
    _, to, raw, message_id = smtp._wire(one, session)
    django = smtp._django_email(compose(one), to=to, message_id=message_id).message().as_bytes(linesep="\r\n")

    # Then both read the same: every header, every part, this recipient's own links; the
    # template served all but the long line (quoted-printable: Django builds that one)
    assert parsed(raw) == parsed(django)
    [template] = session.templates.values()
    assert (template is None) == (kind == "a line past 998 characters")
    headers = BytesParser(policy=policy.default).parsebytes(raw)
    assert headers["Message-ID"] == message_id and headers["Date"]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_recipients_of_one_content_share_its_template_and_keep_their_own_links(smtp: SmtpProvider):
    # Given two recipients of one tracked content
    fields = {"list_unsubscribe": True, "category": "orders", "track_opens": True, **KINDS["tracked opens and clicks"]}
    ada = email(to="ada@example.com", key="d-ada", recipient_id="1", **fields)
    bob = email(to="bob@example.com", key="d-bob", recipient_id="2", **fields)

    # When both are made in one session
    session = _Session()
    ada_raw, bob_raw = smtp._wire(ada, session)[2], smtp._wire(bob, session)[2]

    # Then one template served both, and each carries only its own delivery id and links
    assert len(session.templates) == 1 and None not in session.templates.values()
    for raw, mine, theirs in ((ada_raw, ada, bob), (bob_raw, bob, ada)):
        assert parsed(raw) == parsed(
            smtp._django_email(compose(mine), to=str(mine.to), message_id="<x@y>").message().as_bytes(linesep="\r\n")
        )
        assert theirs.idempotency_key.encode() not in raw and str(theirs.to).encode() not in raw
