"""Email through SendGrid's v3 Mail Send: the JSON body built here, POSTed over one keep-alive
`requests` session per worker process (`http_session`), through the egress guard for a tenant's
host. (The `sendgrid` SDK built a client, a urllib opener and a new connection for every request:
a quarter of a worker's time at 1000 personalizations per request.)

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
import os
import re
import threading
from collections.abc import Mapping, Sequence
from email.utils import parseaddr
from typing import Any

import requests
from django.conf import settings

from apps.core.net import UnresolvableHost, UnsafeUrl, guarded_session
from apps.providers.adapters import Adapter, default_timeout, url_problems
from apps.providers.base import Channel, Message, SendResult
from apps.providers.classify import from_network_error, from_status, sent_then_lost, truncate
from apps.providers.email import Email, address_problem, compose

NAME = "sendgrid"
DEFAULT_HOST = "https://api.sendgrid.com"
MAX_PERSONALIZATIONS = 1000
# SendGrid's limit on the substitutions of one personalization (keys and values, in bytes).
MAX_SUBSTITUTION_BYTES = 10_000
# What our placeholders and skeleton tokens start with (apps/providers/email.py, rendering.py).
PLACEHOLDER_MARK = "-sbx-"
_PERSONALIZATION_FIELD = re.compile(r"^personalizations\.(\d+)\b")
USER_AGENT = "signalbox-sendgrid"


def _errors(body: Any) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return []
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A Mail Send answer that is not 2xx."""

    status_code: int
    body: bytes
    headers: Mapping[str, str]


def from_http_error(exc: Refusal) -> SendResult:
    status = int(exc.status_code)
    errors = _errors(exc.body)
    detail = "; ".join(str(e.get("message")) for e in errors) or f"HTTP {status}"
    code = {401: "auth_failed", 403: "forbidden", 413: "payload_too_large", 429: "rate_limited"}.get(status, "")
    return from_status(NAME, status, code=code, detail=truncate(detail), headers=dict(exc.headers or {}))


def blamed_personalizations(exc: Refusal) -> set[int] | None:
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


_sessions: dict[tuple[int, bool], requests.Session] = {}
_sessions_lock = threading.Lock()


def http_session(*, trusted: bool) -> requests.Session:
    """The keep-alive session of this worker process: one for tenants' hosts, through the egress
    guard (`GuardedAdapter` checks and pins every request, so a pooled connection is only reused
    for the address the host resolves to now), one for the environment's own host. Keyed by the
    process id: a prefork child never shares its parent's sockets. urllib3 keeps one pool per
    (scheme, checked address, host, port), the ten most recent, so a changed config's host gets
    its own connections and the old ones are dropped."""
    key = (os.getpid(), trusted)
    session = _sessions.get(key)
    if session is None:
        with _sessions_lock:
            session = _sessions.get(key)
            if session is None:
                session = requests.Session() if trusted else guarded_session()
                _sessions[key] = session
    return session


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
        # The compositions of the last `plan_requests` of each thread (adapters may be shared).
        self._local = threading.local()

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

    def _mail(self, content: Email, recipients: list[tuple[Message, Email]]) -> dict[str, Any]:
        """The Mail Send body: one content, one personalization per recipient."""
        first = recipients[0][0]
        name, address = parseaddr(self.from_email)
        sender = {"email": address or self.from_email, **({"name": name} if name else {})}
        mail: dict[str, Any] = {"from": sender, "subject": content.subject, "personalizations": []}
        blocks = [("text/plain", content.text), ("text/html", content.html)]
        mail["content"] = [{"type": kind, "value": value} for kind, value in blocks if value]
        if content.reply_to:
            mail["reply_to"] = {"email": content.reply_to}
        if content.headers:
            mail["headers"] = dict(content.headers)
        if first.category:
            mail["categories"] = [first.category]
        if first.track_opens or first.track_clicks:
            # Signalbox rewrote the links and added its pixel; SendGrid's own would wrap them again.
            mail["tracking_settings"] = {
                "click_tracking": {"enable": False, "enable_text": False},
                "open_tracking": {"enable": False},
            }
        for message, email in recipients:
            personalization: dict[str, Any] = {
                "to": [{"email": str(message.to)}],
                "custom_args": {"idempotency_key": message.idempotency_key, "tenant_id": message.tenant_id},
            }
            if email.subject != content.subject:
                personalization["subject"] = email.subject
            if email.recipient_headers:
                personalization["headers"] = dict(email.recipient_headers)
            if email.substitutions:
                personalization["substitutions"] = dict(email.substitutions)
            mail["personalizations"].append(personalization)
        return mail

    def _post(self, mail: dict[str, Any]) -> tuple[SendResult, Refusal | None]:
        body = json.dumps(mail, ensure_ascii=False).encode()
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        try:
            response = http_session(trusted=self.trusted).post(
                f"{self.host}/v3/mail/send", data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except Exception as exc:
            network = from_network_error(NAME, exc)
            if network is None:
                raise
            # A timeout or a dropped connection while waiting for the answer: SendGrid may have
            # accepted the message. Refused before anything was written (connect failure, the
            # egress guard): never ambiguous.
            if not isinstance(exc, (UnsafeUrl, UnresolvableHost)) and sent_then_lost(exc):
                network = dataclasses.replace(network, ambiguous=True)
            return network, None
        if response.status_code >= 300:
            refusal = Refusal(response.status_code, response.content, response.headers)
            return from_http_error(refusal), refusal
        message_id = response.headers.get("X-Message-Id", "")
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
    def _content_key(position: int, message: Message, email: Email) -> tuple[object, ...]:
        """Messages with equal keys can share one request: one body, each personalization with its
        own recipient, subject, headers and substitutions. A message whose substitutions pass
        SendGrid's limit, or whose subject could be mistaken for a placeholder (SendGrid substitutes
        in subjects too), gets a key of its own."""
        size = sum(len(k.encode()) + len(v.encode()) for k, v in email.substitutions.items())
        if size > MAX_SUBSTITUTION_BYTES or PLACEHOLDER_MARK in email.subject:
            return ("alone", position)
        return (
            email.text,
            email.html,
            email.reply_to,
            tuple(sorted(email.headers.items())),
            message.category,
            message.track_opens,
            message.track_clicks,
        )

    def _compose_shared(self, message: Message) -> Email:
        """`compose(message, placeholders=True)`, made once for a message `plan_requests` saw (its
        composition signs two URLs: it was half of a batch's cost when made twice)."""
        planned = getattr(self._local, "planned", None)
        entry = planned.get(id(message)) if planned else None
        if entry is not None and entry[0] is message:
            return entry[1]
        return compose(message, placeholders=True)

    def plan_requests(self, messages: Sequence[Message]) -> list[list[int]]:
        """Indexes of `messages` per Mail Send request, as `send_batch` would make them: one per
        content and 1000 recipients; a message with an unusable address (no request) alone."""
        plan: list[list[int]] = []
        groups: dict[tuple[object, ...], list[int]] = {}
        planned: dict[int, tuple[Message, Email]] = {}
        self._local.planned = planned  # for the `send_batch` calls of this plan, in this thread
        for position, message in enumerate(messages):
            if address_problem(message.to):
                plan.append([position])
                continue
            email = compose(message, placeholders=True)
            planned[id(message)] = (message, email)
            groups.setdefault(self._content_key(position, message, email), []).append(position)
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
            email = self._compose_shared(message)
            groups.setdefault(self._content_key(position, message, email), []).append((position, message, email))
        for items in groups.values():
            if len(items) == 1:
                # Alone, the body can carry its own URLs rather than placeholders.
                position, message, _ = items[0]
                items = [(position, message, compose(message))]
            for start in range(0, len(items), MAX_PERSONALIZATIONS):
                self._send_group(items[start : start + MAX_PERSONALIZATIONS], results)
        return [r for r in results if r is not None]
