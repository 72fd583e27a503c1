"""The one interface every channel provider implements, and the one result shape it returns.

The reliability layer (retries, fallback, dead letters) decides what to do next from a
`SendResult` alone, so a provider never raises for an answer the remote service gave:
it classifies it.

Conventions every adapter in `apps/providers/adapters/` follows:
- `name` and `channel` class attributes; `secret_fields` (stored encrypted, never shown),
  `option_fields` (public) and `required_fields` (the config is incomplete without them);
- `from_config(config)` builds it from one flat dict (options and secrets together), the
  same dict whether it came from a tenant's `ProviderConfig` row or from the environment;
- optionally `send_batch(messages)` when the provider takes many messages in one request
  (SendGrid's personalizations; SMTP's transactions over one connection, each acceptance noted
  in `apps/providers/journal.py` as it comes), with `plan_requests(messages)`: the messages' indexes grouped
  by the provider request that will carry them. The pipeline hands `send_batch` one planned
  group at a time and records its outcomes before the next request, so a worker killed at any
  instant leaves at most one request's messages unrecorded. An adapter with `send_batch` but no
  plan is called one message at a time (the built-in inbox and sinks excepted);
- `reconciles = True` when the provider reports on each message afterwards, naming the delivery
  (SendGrid's Event Webhook, Twilio's status callbacks): a send whose answer was lost then waits
  for that report before it is retried;
- a result with `ambiguous=True` says the request may have reached the provider although no
  answer came back (a timeout or a dropped connection after the request was written); one that
  failed before anything was sent (refused, connect timeout, DNS) is not ambiguous;
- optionally `session()`, a context manager inside which `send()` and `send_batch()` calls share
  what is costly to set up (SMTP: one connection). The pipeline makes a batch's requests inside it
  (`provider_session`), recording each request's answers before the next;
- optionally `check()` when it has a cheap health probe.
(apps/notifications/adapters.py lists the flags the send pipeline reads besides these.)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"
    CHAT = "chat"
    WEBHOOK = "webhook"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Message:
    """A rendered message for one recipient on one channel.

    `to` is the channel's address: an email address, an E.164 number, a list of push
    tokens, a chat/webhook URL, or a recipient id for the in-app inbox.
    `idempotency_key` is the delivery id: providers that accept one pass it on, so a
    retry inside the send/record window is absorbed downstream.
    """

    channel: Channel
    to: Any
    idempotency_key: str
    tenant_id: str
    subject: str = ""
    text: str = ""
    html: str = ""
    title: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    reply_to: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    # Email only. The recipient (its primary key: no contact details in the link) and the
    # category a one-click unsubscribe acts on; with `list_unsubscribe` the message carries
    # `List-Unsubscribe` (RFC 8058) for them.
    recipient_id: str = ""
    category: str = ""
    list_unsubscribe: bool = False
    # Email only: a tracking pixel, and links rewritten through Signalbox's click endpoint.
    track_opens: bool = False
    track_clicks: bool = False
    # Webhook only: the recipient's own signing secret, when it has one (else the provider's).
    signing_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider: str
    message_id: str = ""
    retry_after: float | None = None
    code: str = ""
    detail: str = ""
    status_code: int | None = None
    # Per-token outcomes for multicast (push): token -> code, for tokens to deactivate.
    invalid_tokens: tuple[str, ...] = ()
    # Transient, yet the provider may have the message: the request was sent, the answer lost.
    ambiguous: bool = False

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED

    @classmethod
    def ok(cls, provider: str, message_id: str = "", **kw: Any) -> SendResult:
        return cls(Outcome.ACCEPTED, provider, message_id=message_id, **kw)

    @classmethod
    def transient(cls, provider: str, detail: str, **kw: Any) -> SendResult:
        return cls(Outcome.TRANSIENT, provider, detail=detail, **kw)

    @classmethod
    def permanent(cls, provider: str, detail: str, **kw: Any) -> SendResult:
        return cls(Outcome.PERMANENT, provider, detail=detail, **kw)


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""


class Provider(Protocol):
    """One class per external provider; `send` is the only place that talks to the network."""

    name: str
    channel: Channel

    def send(self, message: Message) -> SendResult: ...


class BatchProvider(Provider, Protocol):
    """A provider that takes many messages in one request.

    Returns one result per message, in order.
    """

    def send_batch(self, messages: list[Message]) -> list[SendResult]: ...

    def plan_requests(self, messages: Sequence[Message]) -> list[list[int]]:
        """Indexes of `messages` per provider request, each group one `send_batch` call."""
        ...


def provider_session(adapter: object) -> AbstractContextManager[object]:
    """The adapter's `session()` when it has one, else a context that does nothing."""
    session = getattr(adapter, "session", None)
    return session() if callable(session) else nullcontext()
