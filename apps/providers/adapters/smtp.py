"""Email over SMTP, through Django's own SMTP backend and `EmailMultiAlternatives`.

The connection is built from the config (host, port, STARTTLS or implicit TLS, login,
timeout), never from the process-wide EMAIL_* settings directly, so each tenant can bring
its own relay. SMTP reply codes decide the outcome: 4xx is transient, 5xx permanent, and a
dropped or refused connection transient.

A batch is many SMTP transactions over one connection: `plan_requests` puts up to
`MAX_MESSAGES_PER_REQUEST` messages in one `send_batch` call, whose outcomes the pipeline then
records in one transaction (docs/reliability.md). Each message is still its own transaction with
its own answer, so a refused recipient (550 at RCPT) fails that delivery alone. SMTP honours no
idempotency key, so each acceptance is noted in the sent-message journal
(`apps/providers/journal.py`) before the next message goes out: a worker killed mid-batch leaves
the accepted ones noted, and their retry answers "accepted" from the note instead of sending a
second copy. Without a journal (Redis down) each message is its own request again, recorded as
soon as it is answered.

What a batch shares is its connections: inside `with adapter.session():` every `send()` and
`send_batch()` of this thread reuses them, opened by the first call that needs them. A large
`send_batch` is spread over up to `connections` SMTP connections (config, default
`DEFAULT_CONNECTIONS`), each driven by its own thread: an SMTP transaction is four round trips
to the relay, and one connection spends most of its time waiting for answers. Each connection
notes its own acceptances in the journal before its next message, so a worker killed mid-batch
repeats at most one message per connection (the one between its answer and its note); a batch
of fewer than `MIN_MESSAGES_PER_CONNECTION` messages per connection uses fewer connections. Once a
connection is refused or lost, the remaining sends over it fail at once as transient
(`disconnected`) rather than each waiting for its own timeout. `send()` outside a session opens
and closes a connection of its own.

A tenant's relay is reached through the egress guard (`GuardedEmailBackend`): the host is
resolved once when the connection opens, an internal address is refused (permanent,
`unsafe_url`) and the socket connects to the checked address.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from email.utils import formatdate, make_msgid, parseaddr
from smtplib import quoteaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend
from django.core.mail.message import sanitize_address

from apps.core.net import GuardedSMTP, GuardedSMTP_SSL
from apps.providers import journal
from apps.providers.adapters import Adapter, default_timeout, host_problems
from apps.providers.base import Channel, Health, Message, SendResult
from apps.providers.classify import from_message_error, from_network_error, truncate
from apps.providers.email import BARE_ADDRESS, Email, address_problem, compose

NAME = "smtp"
# Messages per `send_batch` call: the pipeline's whole send batch (SEND_BATCH_SIZE) by default.
MAX_MESSAGES_PER_REQUEST = 500
# SMTP connections a batch is spread over (each its own thread), unless the config says otherwise.
DEFAULT_CONNECTIONS = 4
MAX_CONNECTIONS = 16
# A connection is opened for at least this many messages of a batch (a handshake costs a few sends).
MIN_MESSAGES_PER_CONNECTION = 25
# Templates a connection keeps (one per content: a batch shares a few at most).
TEMPLATES_PER_SESSION = 32
# The longest line SMTP allows, without its CRLF (RFC 5321 4.5.3.1.6).
SMTP_LINE_LIMIT = 998
# A line of the body that starts with a period gets another (RFC 5321 4.5.2), as smtplib does.
_LEADING_PERIOD = re.compile(rb"(?m)^\.")
# Result codes after which the connection is gone.
CONNECTION_LOST = frozenset({"disconnected", "connection_error", "timeout"})


def from_reply(code: int, text: Any, *, what: str = "") -> SendResult:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    detail = truncate(f"{what}{code} {text}".strip())
    if 400 <= code < 500:
        return SendResult.transient(NAME, detail, code=str(code))
    return SendResult.permanent(NAME, detail, code=str(code))


def from_smtp_error(exc: BaseException) -> SendResult:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        # One recipient per message: its (code, text) is the answer.
        code, text = next(iter(exc.recipients.values()))
        return from_reply(code, text, what="Recipient refused: ")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return SendResult.permanent(
            NAME, truncate(f"Login refused: {exc.smtp_code} {exc.smtp_error!r}"), code="auth_failed"
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SendResult.permanent(NAME, truncate(f"Server does not support it: {exc}"), code="not_supported")
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # smtplib turns a read timeout into "disconnected"; the original error says which it was.
        if isinstance(exc.__context__, TimeoutError):
            return SendResult.transient(NAME, truncate(f"Timed out: {exc}"), code="timeout")
        return SendResult.transient(NAME, truncate(f"Server disconnected: {exc}"), code="disconnected")
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code >= 400:
        return from_reply(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, ssl.SSLError):
        return SendResult.transient(NAME, truncate(f"TLS failed: {exc}"), code="tls_error")
    network = from_network_error(NAME, exc)
    if network is not None:
        return network
    invalid = from_message_error(NAME, exc)
    if invalid is not None:
        return invalid
    return SendResult.transient(NAME, truncate(f"{type(exc).__name__}: {exc}"), code="smtp_error")


class PipeliningEmailBackend(EmailBackend):
    """Django's SMTP backend (its connection, STARTTLS, login), handed a message already built
    (`send_raw`). When the relay offers ESMTP PIPELINING (RFC 2920; Postfix, SES and SendGrid's
    relay do), MAIL, RCPT and DATA go in one write and their three answers are read after: one
    round trip before the body instead of three. Without it, or for an address that is not
    plain ASCII, smtplib's own `sendmail` is used."""

    def send_raw(self, from_email: str, to: str, raw: bytes) -> None:
        connection = self.connection
        if connection is None:
            raise smtplib.SMTPServerDisconnected("The connection is not open.")
        connection.ehlo_or_helo_if_needed()
        if connection.has_extn("pipelining") and (from_email + to).isascii():
            pipelined_sendmail(connection, from_email, to, raw)
        else:
            connection.sendmail(from_email, [to], raw)


def pipelined_sendmail(connection: smtplib.SMTP, from_email: str, to: str, body: bytes) -> None:
    """One SMTP transaction with MAIL, RCPT and DATA pipelined; raises what smtplib's
    `sendmail` would (SMTPSenderRefused, SMTPRecipientsRefused, SMTPDataError), and leaves the
    connection ready for the next transaction."""
    size = f" SIZE={len(body)}" if connection.has_extn("size") else ""
    connection.send(f"MAIL FROM:{quoteaddr(from_email)}{size}\r\nRCPT TO:{quoteaddr(to)}\r\nDATA\r\n")
    mail_reply, rcpt_reply, data_reply = connection.getreply(), connection.getreply(), connection.getreply()
    if data_reply[0] == 354 and (mail_reply[0] != 250 or rcpt_reply[0] not in (250, 251)):
        # RFC 2920: a DATA accepted after a refused MAIL or RCPT is ended at once, with no body.
        connection.send(".\r\n")
        connection.getreply()
    if mail_reply[0] != 250:
        connection.rset()
        raise smtplib.SMTPSenderRefused(mail_reply[0], mail_reply[1], from_email)
    if rcpt_reply[0] not in (250, 251):
        connection.rset()
        raise smtplib.SMTPRecipientsRefused({to: rcpt_reply})
    if data_reply[0] != 354:
        connection.rset()
        raise smtplib.SMTPDataError(*data_reply)
    quoted = _LEADING_PERIOD.sub(b"..", body)
    connection.send(quoted + (b".\r\n" if quoted.endswith(b"\r\n") else b"\r\n.\r\n"))
    code, reply = connection.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


class GuardedEmailBackend(PipeliningEmailBackend):
    """Django's SMTP backend whose connection goes to the address the egress guard checked
    (apps/core/net.py); STARTTLS and implicit TLS still verify the configured host name."""

    @property
    def connection_class(self) -> type[smtplib.SMTP]:
        return GuardedSMTP_SSL if self.use_ssl else GuardedSMTP


class SmtpProvider(Adapter):
    name = NAME
    channel = Channel.EMAIL
    secret_fields = ("password",)
    option_fields = ("host", "port", "username", "use_tls", "use_ssl", "timeout", "from_email", "connections")
    required_fields = ("host", "from_email")

    def __init__(
        self,
        *,
        host: str,
        from_email: str,
        port: int = 25,
        username: str = "",
        password: str = "",
        use_tls: bool = False,
        use_ssl: bool = False,
        timeout: float | None = None,
        connections: int = DEFAULT_CONNECTIONS,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.username = username
        self.password = password
        self.use_tls = bool(use_tls)
        self.use_ssl = bool(use_ssl)
        self.timeout = float(timeout or default_timeout())
        self.from_email = from_email
        self.connections = max(1, min(int(connections or DEFAULT_CONNECTIONS), MAX_CONNECTIONS))
        # The open session of each thread (`session()`): adapters may be shared by threads.
        self._local = threading.local()

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        return {
            "host": settings.EMAIL_HOST,
            "port": settings.EMAIL_PORT,
            "username": settings.EMAIL_HOST_USER,
            "password": settings.EMAIL_HOST_PASSWORD,
            "use_tls": settings.EMAIL_USE_TLS,
            "use_ssl": settings.EMAIL_USE_SSL,
            "timeout": settings.EMAIL_TIMEOUT,
            "from_email": settings.DEFAULT_FROM_EMAIL,
        }

    @classmethod
    def validate_config(cls, config: Any) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if config.get("use_tls") and config.get("use_ssl"):
            errors["use_ssl"] = ["use_tls (STARTTLS) and use_ssl (implicit TLS) exclude each other."]
        if config.get("from_email") and "@" not in parseaddr(str(config["from_email"]))[1]:
            errors["from_email"] = ["Not an email address."]
        if config.get("host") and (problems := host_problems(config["host"], config.get("port"))):
            errors["host"] = problems
        connections = config.get("connections")
        if connections is not None and (
            isinstance(connections, bool) or not isinstance(connections, int) or not 1 <= connections <= MAX_CONNECTIONS
        ):
            errors["connections"] = [f"A whole number from 1 to {MAX_CONNECTIONS}."]
        return errors

    def _backend(self) -> PipeliningEmailBackend:
        backend_class = PipeliningEmailBackend if self.trusted else GuardedEmailBackend
        return backend_class(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            use_ssl=self.use_ssl,
            timeout=self.timeout,
            fail_silently=False,
        )

    @contextmanager
    def _connection(self) -> Iterator[EmailBackend]:
        backend = self._backend()
        backend.open()
        try:
            yield backend
        finally:
            # Closing a broken connection has nothing left to tell.
            with suppress(smtplib.SMTPException, OSError):
                backend.close()

    def _message_id(self) -> str:
        domain = parseaddr(self.from_email)[1].rpartition("@")[2] or "signalbox.invalid"
        return make_msgid(domain=domain)

    def _wire(self, message: Message, state: _Session) -> tuple[str, str, bytes, str]:
        """(envelope sender, envelope recipient, the message's bytes, its Message-ID): from the
        session's template of its content when it has one (`_Template`), else built by Django."""
        to = str(message.to)
        encoding = settings.DEFAULT_CHARSET
        message_id = self._message_id()
        email = compose(message, placeholders=True)
        if email.content_key not in state.templates:
            state.keep_template(email.content_key, _Template.build(self._django_email(email, to=None, message_id="")))
        template = state.templates[email.content_key]
        date = formatdate(localtime=settings.EMAIL_USE_LOCALTIME)
        raw = template.fill(to, message_id, date, email) if template is not None else None
        if raw is None:  # not fit for a template: Django builds this one, as it did every one
            raw = self._django_email(compose(message), to=to, message_id=message_id).message().as_bytes(linesep="\r\n")
        return state.sanitized(self.from_email, encoding), state.sanitized(to, encoding), raw, message_id

    def _django_email(self, email: Email, *, to: str | None, message_id: str) -> EmailMultiAlternatives:
        """The message as Django builds it; without `to`, the template of its content: no
        recipient headers, and markers where the Date and Message-ID go."""
        headers = (
            {**email.all_headers, "Message-ID": message_id}
            if to is not None
            else {**email.headers, "Date": _Template.DATE, "Message-ID": _Template.MESSAGE_ID}
        )
        mail = EmailMultiAlternatives(
            subject=email.subject,
            body=email.text,
            from_email=self.from_email,
            to=[to] if to is not None else [],
            reply_to=[email.reply_to] if email.reply_to else None,
            headers=headers,
        )
        if email.html:
            mail.attach_alternative(email.html, "text/html")
        return mail

    @contextmanager
    def session(self) -> Iterator[None]:
        """Shares one connection between the `send()` and `send_batch()` calls inside it (in this
        thread). On a clean exit the journal notes of its batches are dropped: the pipeline has
        recorded them by then."""
        if getattr(self._local, "session", None) is not None:  # nested: the outer one owns it
            yield
            return
        state = _Session()
        self._local.session = state
        try:
            yield
        except BaseException:
            state.noted.clear()  # not recorded: the notes must outlive this worker
            raise
        finally:
            self._local.session = None
            state.close()

    def send(self, message: Message) -> SendResult:
        state: _Session | None = getattr(self._local, "session", None)
        if state is None:
            with self.session():
                return self.send(message)
        try:
            noted = journal.accepted(NAME, [message.idempotency_key])
        except journal.JournalUnavailable:
            noted = {}
        if message.idempotency_key in noted:
            state.noted.append(message.idempotency_key)  # dropped once recorded, with the session's
            return _accepted_before(noted[message.idempotency_key])
        return self._send_one(message, state)

    def plan_requests(self, messages: Sequence[Message]) -> list[list[int]]:
        """Up to MAX_MESSAGES_PER_REQUEST messages per `send_batch` call while the journal
        answers; one message per call otherwise (each then recorded as soon as it is answered)."""
        size = MAX_MESSAGES_PER_REQUEST if len(messages) > 1 and journal.available() else 1
        return [list(range(start, min(start + size, len(messages)))) for start in range(0, len(messages), size)]

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        """One SMTP transaction per message over the session's connections; results in order.

        The messages are dealt over up to `connections` connections, each sent by its own thread.
        Each acceptance is noted in the journal before that connection's next message; a message
        an earlier, unrecorded send got accepted is answered from its note, not sent again. If the
        journal stops answering, the rest of the batch is not sent (transient,
        `journal_unavailable`)."""
        state: _Session | None = getattr(self._local, "session", None)
        if state is None:
            with self.session():
                answered = self.send_batch(messages)
                self._local.session.noted.clear()  # the caller records after this: keep the notes
                return answered
        # The previous call's messages were recorded before this one was made (base.py).
        journal.forget(NAME, state.noted)
        state.noted.clear()
        try:
            noted = journal.accepted(NAME, [m.idempotency_key for m in messages])
        except journal.JournalUnavailable as exc:
            return [_unjournaled(exc) for _ in messages]
        results: list[SendResult | None] = [None] * len(messages)
        batch = _Batch(messages, noted, results)
        lanes = state.lanes(min(self.connections, max(1, len(messages) // MIN_MESSAGES_PER_CONNECTION)))
        # Dealt like cards, so a slow stretch of the batch is shared by every connection.
        others: list[Future[list[str]]] = [
            state.pool().submit(self._send_lane, lane, range(i, len(messages), len(lanes)), batch)
            for i, lane in enumerate(lanes[1:], start=1)
        ]
        try:
            state.noted.extend(self._send_lane(lanes[0], range(0, len(messages), len(lanes)), batch))
        finally:
            wait(others)  # no thread may go on sending once this call has returned or raised
        for lane_sent in others:
            state.noted.extend(lane_sent.result())  # re-raises what a lane raised
        return [r for r in results if r is not None]

    def _send_lane(self, lane: _Session, positions: range, batch: _Batch) -> list[str]:
        """Sends `batch.messages[positions]` in order over `lane`'s connection, each acceptance
        noted before the next; returns the idempotency keys it noted (or found noted)."""
        noted_keys: list[str] = []
        try:
            for position in positions:
                message = batch.messages[position]
                if batch.stopped is not None:
                    batch.results[position] = batch.stopped
                    continue
                if message.idempotency_key in batch.noted:
                    batch.results[position] = _accepted_before(batch.noted[message.idempotency_key])
                    noted_keys.append(message.idempotency_key)
                    continue
                result = self._send_one(message, lane)
                batch.results[position] = result
                if not result.accepted:
                    continue
                try:
                    journal.add(NAME, message.idempotency_key, result.message_id)
                except journal.JournalUnavailable as exc:
                    batch.stopped = _unjournaled(exc)  # every connection stops before its next message
                    continue
                noted_keys.append(message.idempotency_key)
        except BaseException:
            batch.stopped = SendResult.transient(NAME, "Another connection of the batch failed.", code="aborted")
            raise
        return noted_keys

    def _send_one(self, message: Message, state: _Session) -> SendResult:
        problem = address_problem(message.to)
        if problem:
            return SendResult.permanent(NAME, problem, code="invalid_address")
        if state.lost is not None:
            return state.lost
        if state.backend is None:
            backend = self._backend()
            try:
                backend.open()
            except Exception as exc:
                state.lost = from_smtp_error(exc)
                return state.lost
            state.backend = backend
        try:
            from_email, to, raw, message_id = self._wire(message, state)
            state.backend.send_raw(from_email, to, raw)
        except Exception as exc:
            result = from_smtp_error(exc)
            if result.code in CONNECTION_LOST:
                state.lost = SendResult.transient(
                    NAME, "The connection was lost before this message.", code="disconnected"
                )
            return result
        return SendResult.ok(NAME, message_id)

    def check(self) -> Health:
        try:
            with self._connection() as backend:
                assert backend.connection is not None
                code, _ = backend.connection.noop()
        except Exception as exc:
            return Health(False, from_smtp_error(exc).detail)
        return Health(code == 250, f"NOOP {code}")


def _accepted_before(message_id: str) -> SendResult:
    """An earlier send of this message was accepted but not recorded (its worker died)."""
    detail = "Accepted by an earlier, interrupted send; not sent again."
    return SendResult.ok(NAME, "" if message_id == "-" else message_id, detail=detail)


def _unjournaled(exc: Exception) -> SendResult:
    return SendResult.transient(
        NAME, truncate(f"Not sent: the sent-message journal did not answer ({exc})."), code="journal_unavailable"
    )


class _Template:
    """The bytes of one content's message as Django builds it, less what differs per recipient,
    so a batch builds MIME once per content rather than once per message (the email package's
    folding and encoding were the largest share of an SMTP send's CPU). A message is its
    recipient's headers (To, X-Signalbox-Delivery, List-Unsubscribe) before the template's, with
    its Date, Message-ID and placeholder values (tracking and preference URLs, recipient values of
    a skeleton, apps/providers/email.py) put in. Only when that is exactly what Django would have
    written: parts in 7bit or 8bit (not quoted-printable or base64, where a value would have to
    be encoded), every value plain ASCII on one line, no line past SMTP's 998; otherwise Django
    builds that message."""

    DATE = "-sbx-date-"
    MESSAGE_ID = "-sbx-message-id-"
    _ENCODED = re.compile(rb"^Content-Transfer-Encoding: *(?:quoted-printable|base64)", re.IGNORECASE | re.MULTILINE)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    @classmethod
    def build(cls, mail: EmailMultiAlternatives) -> _Template | None:
        raw = mail.message().as_bytes(linesep="\r\n")
        marks = (cls.DATE.encode(), cls.MESSAGE_ID.encode())
        if cls._ENCODED.search(raw) or any(raw.count(mark) != 1 for mark in marks):
            return None
        return cls(raw)

    def fill(self, to: str, message_id: str, date: str, email: Email) -> bytes | None:
        """This recipient's message, or None when it cannot be made from the template."""
        head = {"To": to, **email.recipient_headers}
        values = [*head.values(), message_id, date, *email.substitutions.values()]
        if not BARE_ADDRESS.match(to) or not all(_plain(value) for value in values):
            return None
        raw = self.raw.replace(self.DATE.encode(), date.encode()).replace(self.MESSAGE_ID.encode(), message_id.encode())
        for placeholder, value in email.substitutions.items():
            if placeholder.encode() not in raw:
                return None
            raw = raw.replace(placeholder.encode(), value.encode())
        raw = "".join(f"{name}: {value}\r\n" for name, value in head.items()).encode() + raw
        if max(map(len, raw.split(b"\r\n"))) > SMTP_LINE_LIMIT:
            return None
        return raw


def _plain(value: str) -> bool:
    return value.isascii() and "\r" not in value and "\n" not in value


class _Batch:
    """One `send_batch` call, shared by its connections' threads: each writes only its own
    positions of `results`; `stopped`, once set, answers every message not yet sent."""

    def __init__(self, messages: Sequence[Message], noted: dict[str, str], results: list[SendResult | None]) -> None:
        self.messages = messages
        self.noted = noted
        self.results = results
        self.stopped: SendResult | None = None


class _Session:
    """One `SmtpProvider.session()`: its connection once opened, the failure that ended it, and
    the journal notes of its last batch (dropped once that batch is recorded); for batches over
    several connections, the other connections' own sessions and the threads that drive them."""

    def __init__(self) -> None:
        self.backend: PipeliningEmailBackend | None = None
        self.lost: SendResult | None = None
        self.noted: list[str] = []
        self._lanes: list[_Session] = [self]
        self._pool: ThreadPoolExecutor | None = None
        # Content key -> its template (None: not fit for one), the last few contents of this connection.
        self.templates: dict[tuple[object, ...], _Template | None] = {}
        self._sanitized: dict[tuple[str, str], str] = {}

    def keep_template(self, key: tuple[object, ...], template: _Template | None) -> None:
        if len(self.templates) >= TEMPLATES_PER_SESSION:
            self.templates.clear()
        self.templates[key] = template

    def sanitized(self, address: str, encoding: str) -> str:
        """Django's `sanitize_address` (a third of a message's composing time): skipped for a
        bare ASCII address, which it returns as it is; remembered for the sender."""
        if address.isascii() and BARE_ADDRESS.match(address):
            return address
        key = (address, encoding)
        if key not in self._sanitized:
            if len(self._sanitized) >= TEMPLATES_PER_SESSION:
                self._sanitized.clear()
            self._sanitized[key] = str(sanitize_address(address, encoding))
        return self._sanitized[key]

    def lanes(self, count: int) -> list[_Session]:
        """This session and `count - 1` more, each its own connection (kept for later batches)."""
        while len(self._lanes) < count:
            self._lanes.append(_Session())
        return self._lanes[:count]

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=MAX_CONNECTIONS, thread_name_prefix="smtp")
        return self._pool

    def close(self) -> None:
        journal.forget(NAME, self.noted)
        self.noted.clear()
        for lane in self._lanes[1:]:
            lane.close()
        del self._lanes[1:]
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self.backend is not None:
            # Closing a broken connection has nothing left to tell.
            with suppress(smtplib.SMTPException, OSError):
                self.backend.close()
            self.backend = None
