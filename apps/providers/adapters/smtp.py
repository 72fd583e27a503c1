"""Email over SMTP, through Django's own SMTP backend and `EmailMultiAlternatives`.

The connection is built from the config (host, port, STARTTLS or implicit TLS, login,
timeout), never from the process-wide EMAIL_* settings directly, so each tenant can bring
its own relay. SMTP reply codes decide the outcome: 4xx is transient, 5xx permanent, and a
dropped or refused connection transient.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from email.utils import make_msgid, parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend

from apps.providers.adapters import Adapter, default_timeout
from apps.providers.base import Channel, Health, Message, SendResult
from apps.providers.classify import from_network_error, truncate
from apps.providers.email import address_problem, compose

NAME = "smtp"


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
    return SendResult.transient(NAME, truncate(f"{type(exc).__name__}: {exc}"), code="smtp_error")


class SmtpProvider(Adapter):
    name = NAME
    channel = Channel.EMAIL
    secret_fields = ("password",)
    option_fields = ("host", "port", "username", "use_tls", "use_ssl", "timeout", "from_email")
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
    ) -> None:
        self.host = host
        self.port = int(port)
        self.username = username
        self.password = password
        self.use_tls = bool(use_tls)
        self.use_ssl = bool(use_ssl)
        self.timeout = float(timeout or default_timeout())
        self.from_email = from_email

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
        return errors

    def _backend(self) -> EmailBackend:
        return EmailBackend(
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

    def _email(self, message: Message, backend: EmailBackend) -> tuple[EmailMultiAlternatives, str]:
        email = compose(message)
        domain = parseaddr(self.from_email)[1].rpartition("@")[2] or "signalbox.invalid"
        message_id = make_msgid(domain=domain)
        mail = EmailMultiAlternatives(
            subject=email.subject,
            body=email.text,
            from_email=self.from_email,
            to=[str(message.to)],
            reply_to=[email.reply_to] if email.reply_to else None,
            headers={**email.all_headers, "Message-ID": message_id},
            connection=backend,
        )
        if email.html:
            mail.attach_alternative(email.html, "text/html")
        return mail, message_id

    def _send_on(self, backend: EmailBackend, message: Message) -> SendResult:
        problem = address_problem(message.to)
        if problem:
            return SendResult.permanent(NAME, problem, code="invalid_address")
        try:
            mail, message_id = self._email(message, backend)
            mail.send()
        except Exception as exc:
            return from_smtp_error(exc)
        return SendResult.ok(NAME, message_id)

    def send(self, message: Message) -> SendResult:
        return self.send_batch([message])[0]

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        """All messages over one connection; a dropped connection fails the rest as transient."""
        results: list[SendResult] = []
        try:
            with self._connection() as backend:
                for message in messages:
                    result = self._send_on(backend, message)
                    results.append(result)
                    if result.code in ("disconnected", "connection_error", "timeout"):
                        break
        except Exception as exc:
            failed = from_smtp_error(exc)
            results.extend(failed for _ in range(len(messages) - len(results)))
        if len(results) < len(messages):
            lost = SendResult.transient(NAME, "The connection was lost before this message.", code="disconnected")
            results.extend(lost for _ in range(len(messages) - len(results)))
        return results

    def check(self) -> Health:
        try:
            with self._connection() as backend:
                assert backend.connection is not None
                code, _ = backend.connection.noop()
        except Exception as exc:
            return Health(False, from_smtp_error(exc).detail)
        return Health(code == 250, f"NOOP {code}")
