"""Email through SendGrid's v3 Mail Send, with the `sendgrid` SDK.

One message is one personalization; `send_batch` puts up to 1000 personalizations that share
a content into one request (SendGrid's limit), each with its own recipient, delivery id
(`custom_args.idempotency_key`, echoed back by SendGrid's Event Webhook), headers and, when
tracking, its own pixel and link URLs as substitutions. A 400 that blames single
personalizations (an invalid address) fails those and sends the rest once more.

`plan_requests` says which messages share a request, so the pipeline records each request's
outcomes before the next (messages with their own content are one request each). A timeout or a
dropped connection after the request was written is `ambiguous`: SendGrid may have accepted it,
and its Event Webhook will say so (`reconciles`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from email.utils import parseaddr
from typing import Any
from urllib.error import URLError

import python_http_client
from django.conf import settings
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Category,
    ClickTracking,
    CustomArg,
    From,
    Header,
    Mail,
    OpenTracking,
    Personalization,
    ReplyTo,
    Substitution,
    To,
    TrackingSettings,
)

from apps.core.net import UnresolvableHost, UnsafeUrl, guarded_opener
from apps.providers.adapters import Adapter, default_timeout, url_problems
from apps.providers.base import Channel, Message, SendResult
from apps.providers.classify import from_network_error, from_status, truncate
from apps.providers.email import Email, address_problem, compose

NAME = "sendgrid"
DEFAULT_HOST = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")


def _errors(body: Any) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return []
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def from_http_error(exc: HTTPError) -> SendResult:
    status = int(exc.status_code)
    errors = _errors(exc.body)
    detail = "; ".join(str(e.get("message")) for e in errors) or f"HTTP {status}"
    code = {401: "auth_failed", 403: "forbidden", 413: "payload_too_large", 429: "rate_limited"}.get(status, "")
    return from_status(NAME, status, code=code, detail=truncate(detail), headers=dict(exc.headers or {}))


def blamed_personalizations(exc: HTTPError) -> set[int] | None:
    """The personalization indexes a 400 blames, or None if any error is about something else."""
    if int(exc.status_code) != 400:
        return None
    errors = _errors(exc.body)
    indexes: set[int] = set()
    for error in errors:
        match = _PERSONALIZATION_FIELD.match(str(error.get("field") or ""))
        if match is None:
            return None
        indexes.add(int(match.group(1)))
    return indexes or None


class GuardedHttpClient(python_http_client.Client):  # type: ignore[misc]
    """The SDK's HTTP client with every request through the egress guard's urllib opener
    (apps/core/net.py): the checked address, no proxy, no redirect followed."""

    def _build_client(self, name: str | None = None) -> GuardedHttpClient:
        url_path = [*self._url_path, name] if name else self._url_path
        return GuardedHttpClient(
            host=self.host,
            version=self._version,
            request_headers=self.request_headers,
            url_path=url_path,
            append_slash=self.append_slash,
            timeout=self.timeout,
        )

    def _make_request(self, opener: Any, request: Any, timeout: float | None = None) -> Any:
        return super()._make_request(guarded_opener(), request, timeout=timeout)


class SendGridProvider(Adapter):
    name = NAME
    channel = Channel.EMAIL
    secret_fields = ("api_key",)
    # `event_webhook_public_key`: the tenant's Event Webhook verification key
    # (apps/notifications/services/sendgrid_events.py).
    option_fields = ("host", "from_email", "timeout", "event_webhook_public_key")
    required_fields = ("api_key", "from_email")
    # The Event Webhook reports every message by its delivery id (apps/notifications/services/sendgrid_events.py).
    reconciles = True

    def __init__(
        self,
        *,
        api_key: str,
        from_email: str,
        host: str = DEFAULT_HOST,
        timeout: float | None = None,
        event_webhook_public_key: str = "",
    ) -> None:
        self.event_webhook_public_key = event_webhook_public_key
        self.api_key = api_key
        self.from_email = from_email
        self.host = host.rstrip("/")
        self.timeout = float(timeout or default_timeout())

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        return {
            "api_key": settings.SENDGRID_API_KEY,
            "host": settings.SENDGRID_API_HOST,
            "from_email": settings.DEFAULT_FROM_EMAIL,
        }

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if config.get("from_email") and "@" not in parseaddr(str(config["from_email"]))[1]:
            errors["from_email"] = ["Not an email address."]
        if config.get("host") and not str(config["host"]).startswith(("https://", "http://")):
            errors["host"] = ["An http(s) base URL, e.g. https://api.sendgrid.com or https://api.eu.sendgrid.com."]
        elif config.get("host") and (problems := url_problems(config["host"])):
            errors["host"] = problems
        return errors

    def _client(self) -> SendGridAPIClient:
        client = SendGridAPIClient(api_key=self.api_key, host=self.host)
        if not self.trusted:  # a tenant's host: through the egress guard
            client.client = GuardedHttpClient(host=self.host, request_headers=client._default_headers, version=3)
        client.client.timeout = self.timeout
        return client

    def _mail(self, content: Email, recipients: list[tuple[Message, Email]]) -> Mail:
        first = recipients[0][0]
        mail = Mail(
            from_email=From(self.from_email),
            subject=content.subject,
            plain_text_content=content.text or None,
            html_content=content.html or None,
        )
        if content.reply_to:
            mail.reply_to = ReplyTo(content.reply_to)
        for name, value in content.headers.items():
            mail.header = Header(name, value)
        if first.category:
            mail.category = Category(first.category)
        if first.track_opens or first.track_clicks:
            # Signalbox rewrote the links and added its pixel; SendGrid's own would wrap them again.
            mail.tracking_settings = TrackingSettings(
                click_tracking=ClickTracking(False, False), open_tracking=OpenTracking(False)
            )
        for index, (message, email) in enumerate(recipients):
            personalization = Personalization()
            personalization.add_to(To(str(message.to)))
            personalization.add_custom_arg(CustomArg("idempotency_key", message.idempotency_key))
            personalization.add_custom_arg(CustomArg("tenant_id", message.tenant_id))
            for name, value in email.recipient_headers.items():
                personalization.add_header(Header(name, value))
            for key, value in email.substitutions.items():
                personalization.add_substitution(Substitution(key, value))
            mail.add_personalization(personalization, index=index)
        return mail

    def _post(self, mail: Mail) -> tuple[SendResult, HTTPError | None]:
        try:
            response = self._client().send(mail)
        except HTTPError as exc:
            return from_http_error(exc), exc
        except Exception as exc:
            network = from_network_error(NAME, exc)
            if network is None:
                raise
            # urllib wraps what fails while connecting and writing the request in URLError; a
            # timeout or a dropped connection while waiting for the answer comes unwrapped, and
            # then SendGrid may have accepted the message. The egress guard refuses before
            # anything is written, or after an answer (a redirect): never ambiguous.
            if not isinstance(exc, (URLError, UnsafeUrl, UnresolvableHost)):
                network = dataclasses.replace(network, ambiguous=True)
            return network, None
        message_id = response.headers.get("X-Message-Id", "") if response.headers else ""
        return SendResult.ok(NAME, message_id, status_code=response.status_code), None

    def _send_group(self, items: list[tuple[int, Message, Email]], results: list[SendResult | None]) -> None:
        mail = self._mail(items[0][2], [(message, email) for _, message, email in items])
        result, error = self._post(mail)
        blamed = blamed_personalizations(error) if error is not None else None
        if blamed is None or len(blamed) >= len(items):
            for position, _, _ in items:
                results[position] = result
            return
        rest = []
        for index, item in enumerate(items):
            if index in blamed:
                results[item[0]] = result
            else:
                rest.append(item)
        retry, _ = self._post(self._mail(rest[0][2], [(message, email) for _, message, email in rest]))
        for position, _, _ in rest:
            results[position] = retry

    def send(self, message: Message) -> SendResult:
        return self.send_batch([message])[0]

    @staticmethod
    def _content_key(message: Message, email: Email) -> tuple[object, ...]:
        """Messages with equal keys can share one request (one content, personalizations apart)."""
        return (*email.content_key, message.category, message.track_opens, message.track_clicks)

    def plan_requests(self, messages: Sequence[Message]) -> list[list[int]]:
        """Indexes of `messages` per Mail Send request, as `send_batch` would make them: one per
        content and 1000 recipients; a message with an unusable address (no request) alone."""
        plan: list[list[int]] = []
        groups: dict[tuple[object, ...], list[int]] = {}
        for position, message in enumerate(messages):
            if address_problem(message.to):
                plan.append([position])
                continue
            groups.setdefault(self._content_key(message, compose(message, placeholders=True)), []).append(position)
        for positions in groups.values():
            plan.extend(
                positions[start : start + MAX_PERSONALIZATIONS]
                for start in range(0, len(positions), MAX_PERSONALIZATIONS)
            )
        return plan

    def send_batch(self, messages: list[Message]) -> list[SendResult]:
        """One request per content and 1000 recipients; results in the order of `messages`."""
        groups: dict[tuple[object, ...], list[tuple[int, Message, Email]]] = {}
        results: list[SendResult | None] = [None] * len(messages)
        for position, message in enumerate(messages):
            problem = address_problem(message.to)
            if problem:
                results[position] = SendResult.permanent(NAME, problem, code="invalid_address")
                continue
            email = compose(message, placeholders=True)
            groups.setdefault(self._content_key(message, email), []).append((position, message, email))
        for items in groups.values():
            if len(items) == 1:
                # Alone, the body can carry its own URLs rather than placeholders.
                position, message, _ = items[0]
                items = [(position, message, compose(message))]
            for start in range(0, len(items), MAX_PERSONALIZATIONS):
                self._send_group(items[start : start + MAX_PERSONALIZATIONS], results)
        return [r for r in results if r is not None]
