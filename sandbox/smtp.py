"""An SMTP server (aiosmtpd) that records every message, one record per envelope recipient.

Headers, the text and HTML parts and attachment names are parsed out so tests can assert
on them, when a message is first read: on arrival only its headers are (sandbox/state.py).
It offers PIPELINING, and answers pipelined commands in one write (`PipeliningSMTP`).
Any AUTH credentials are accepted without TLS, so Django's SMTP backend works with or without
a username. Fault rules with a `match` reject that address at RCPT TO
(e.g. 550 permanent, 451 temporary); rules without one answer at DATA.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from sandbox.faults import Fault
from sandbox.state import Message, Store

log = logging.getLogger(__name__)

PROVIDER = "smtp"
IDEMPOTENCY_HEADER = "X-Signalbox-Delivery"

# Reply texts for the codes a fault usually names; others get a generic text.
REPLIES = {
    421: "421 4.3.2 Service not available, closing transmission channel",
    450: "450 4.2.1 Mailbox unavailable, try again later",
    451: "451 4.3.0 Temporary failure, please try again later",
    452: "452 4.3.1 Insufficient system storage",
    550: "550 5.1.1 <{address}>: Recipient address rejected: User unknown",
    552: "552 5.2.2 Mailbox full",
    553: "553 5.1.3 Invalid recipient address",
    554: "554 5.7.1 Message rejected",
}


def fault_reply(fault: Fault, address: str = "") -> str:
    code = fault.status if isinstance(fault.status, int) else 554
    template = REPLIES.get(code, f"{code} {'4.0.0' if code < 500 else '5.0.0'} Sandbox fault")
    return template.format(address=address)


def parse(raw: bytes) -> tuple[EmailMessage, dict[str, Any]]:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    parts: dict[str, Any] = {"text": None, "html": None, "attachments": []}
    for kind in ("plain", "html"):
        body = message.get_body(preferencelist=(kind,))
        if body is not None:
            parts["text" if kind == "plain" else "html"] = body.get_content()
    for attachment in message.iter_attachments():
        parts["attachments"].append(
            {"filename": attachment.get_filename(), "content_type": attachment.get_content_type()}
        )
    return message, parts


def header_dict(message: EmailMessage) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in message.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else str(value)
    return headers


class RecordingHandler:
    """aiosmtpd handler hooks; aiosmtpd calls them by name."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's EHLO answer plus PIPELINING (RFC 2920), which real relays offer: aiosmtpd
        reads commands one at a time from its buffered stream, so pipelined ones are answered
        in order as they are."""
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        fault = self.store.take_fault(PROVIDER, [address], targeted=True)
        if fault is not None and fault.status is not None:
            await fault.wait()
            self.store.attempt(PROVIDER, fault.status, [address], fault=fault)
            return fault_reply(fault, address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if fault is not None:
            await fault.wait()
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = list(envelope.rcpt_tos)
        raw = envelope.original_content or b""
        fault = self.store.take_fault(PROVIDER, recipients, targeted=False)
        if fault is not None and fault.status is not None:
            await fault.wait()
            self.store.attempt(PROVIDER, fault.status, recipients, fault=fault)
            return fault_reply(fault)

        message_id, key = identity(raw)  # the envelope's identity now, the body when read
        key = key or message_id
        details = functools.cache(lambda: _details(raw, envelope.mail_from, recipients, session))
        for recipient in recipients:
            self.store.record(
                Message(
                    provider=PROVIDER,
                    recipient=recipient,
                    provider_message_id=message_id,
                    sender=envelope.mail_from,
                    idempotency_key=str(key) if key else None,
                    pending=details,
                ),
                raw=raw,
            )
        self.store.attempt(PROVIDER, 250, recipients, idempotency_key=str(key) if key else None, fault=fault)
        if fault is not None:
            await fault.wait()
        return "250 Message accepted for delivery"


def _details(raw: bytes, mail_from: str | None, recipients: list[str], session: Session) -> dict[str, Any]:
    """What a reader sees of one SMTP message: parsed once, on first read, for all its recipients."""
    message, parts = parse(raw)
    return {
        "subject": message.get("Subject"),
        "text": parts["text"],
        "html": parts["html"],
        "headers": header_dict(message),
        "extra": {
            "envelope_from": mail_from,
            "envelope_to": recipients,
            "from": message.get("From"),
            "to": message.get("To"),
            "cc": message.get("Cc"),
            "reply_to": message.get("Reply-To"),
            "list_unsubscribe": message.get("List-Unsubscribe"),
            "list_unsubscribe_post": message.get("List-Unsubscribe-Post"),
            "attachments": parts["attachments"],
            "auth_user": getattr(session, "auth_data", None),
            "size": len(raw),
        },
    }


def accept_any_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    login = getattr(auth_data, "login", None)
    user = login.decode("utf-8", "replace") if isinstance(login, bytes) else login
    return AuthResult(success=True, auth_data=user)


# An SMTP path of a plain dot-atom address (RFC 5321 4.1.2), then its parameters (`SIZE=…`).
_SIMPLE_PATH = re.compile(
    r"^<(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?P<rest>(?: .*)?)$"
)
# The two headers a message is recorded by on arrival: the rest is parsed when it is first read.
_IDENTITY_HEADER = re.compile(rb"^(message-id|x-signalbox-delivery):[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def identity(raw: bytes) -> tuple[str, str]:
    """(Message-ID, X-Signalbox-Delivery) from the header block, as a header parser reads them
    when each is on one line (ours are); a folded one is left to the parser."""
    head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    found: dict[bytes, str] = {}
    for match in _IDENTITY_HEADER.finditer(head):
        end = match.end()
        if head[end : end + 3] in (b"\r\n ", b"\r\n\t") or head[end : end + 2] in (b"\n ", b"\n\t"):
            parsed = BytesHeaderParser().parsebytes(raw)
            return str(parsed.get("Message-ID") or ""), str(parsed.get(IDEMPOTENCY_HEADER) or "")
        found.setdefault(match.group(1).lower(), match.group(2).decode("utf-8", "replace"))
    return found.get(b"message-id", ""), found.get(b"x-signalbox-delivery", "")


class PipeliningSMTP(SMTP):
    """aiosmtpd's server, whose answers to pipelined commands leave in one write: an answer is
    held while the client's next command has already arrived, and sent with the next answer
    that finds no command waiting (RFC 2920 section 3.2 asks servers to batch them so)."""

    _held: bytes = b""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's own, with a fast way for the common `<local@domain>` (its parser, and a
        class it defines on every call, were a third of the sandbox's CPU per message)."""
        simple = _SIMPLE_PATH.match(arg)
        if simple is None or (self.local_part_limit and len(simple["local"]) > self.local_part_limit):
            return super()._getaddr(arg)  # type: ignore[no-any-return]
        return f"{simple['local']}@{simple['domain']}", simple["rest"].lstrip(" \t")

    async def push(self, status: AnyStr) -> None:
        response = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str) else status
        reader = self._reader
        if reader is not None and getattr(reader, "_buffer", None) and not reader.at_eof():
            self._held += response + b"\r\n"
            return
        held, self._held = self._held, b""
        await super().push(held + response)


async def start_smtp(store: Store, host: str, port: int) -> asyncio.Server:
    # aiosmtpd logs every command line at INFO: at thousands of messages a second that was a
    # sixth of the sandbox's CPU. Its warnings and errors still show; --log-level DEBUG shows all.
    aiosmtpd_log = logging.getLogger("mail.log")
    if not aiosmtpd_log.isEnabledFor(logging.DEBUG):
        aiosmtpd_log.setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    handler = RecordingHandler(store)

    def factory() -> SMTP:
        return PipeliningSMTP(
            handler,
            hostname="sandbox.signalbox.local",
            ident="Signalbox sandbox ESMTP",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=accept_any_login,
            loop=loop,
        )

    return await loop.create_server(factory, host=host, port=port)
