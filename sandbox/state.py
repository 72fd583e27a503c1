"""What the sandbox remembers: received messages, request attempts, faults and secrets.

Everything lives in memory on the one event loop, so no locking is needed. With a data
directory, each message is also appended to `messages.jsonl` (and SMTP's raw bytes to
`eml/`), and reloaded at start so the outbox survives a restart.

A message may be recorded before it is fully read (SMTP: only its headers are parsed on arrival;
parsing a MIME body cost 8.3 ms of CPU each, which capped the sandbox near 120 emails/s and made it
the bottleneck of what it measured). Its `pending` parse runs once, for the first reader.

`reset()` forgets messages, attempts, faults, webhook secrets and automatic callbacks, but keeps credentials
(service-account keys and issued OAuth tokens): they mirror account configuration at the
provider, and clients cache tokens across tests.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.config import CHANNELS
from sandbox.faults import Fault

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Message:
    """One message for one recipient, as a provider accepted it."""

    provider: str
    recipient: str
    provider_message_id: str
    sender: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: f"msg_{secrets.token_hex(8)}")
    seq: int = 0
    created_at: str = field(default_factory=utc_now)
    # The rest of the message, read when first needed: returns fields to set (`extra` is merged).
    pending: Callable[[], dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def channel(self) -> str:
        return CHANNELS[self.provider]

    def complete(self) -> Message:
        """Runs the pending parse, if any, once."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            for name, value in pending().items():
                if name == "extra":
                    self.extra.update(value)
                else:
                    setattr(self, name, value)
        return self

    def to_dict(self) -> dict[str, Any]:
        self.complete()
        data = asdict(self)
        del data["pending"]
        data["channel"] = self.channel
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        data = {k: v for k, v in data.items() if k != "channel"}
        return cls(**data)


@dataclass
class Attempt:
    """One request a provider endpoint answered, successful or not (for retry assertions)."""

    provider: str
    status: int | str
    recipients: list[str]
    idempotency_key: str | None = None
    fault_id: str | None = None
    at: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store:
    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir
        self.messages: list[Message] = []
        self.attempts: list[Attempt] = []
        self.faults: list[Fault] = []
        self.webhook_secrets: dict[str, str] = {}
        # provider -> how to report its accepted messages by itself (sandbox/callbacks.py, "auto").
        self.auto_callbacks: dict[str, dict[str, Any]] = {}
        # client_email -> PEM public key, for verifying OAuth JWT assertions.
        self.service_account_keys: dict[str, bytes] = {}
        # access token -> client_email
        self.access_tokens: dict[str, str] = {}
        self._seq = itertools.count(1)
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._load()

    # -- messages -------------------------------------------------------------------------

    def record(self, message: Message, *, raw: bytes | None = None) -> Message:
        message.seq = next(self._seq)
        self.messages.append(message)
        if self.data_dir is not None:
            with (self.data_dir / "messages.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(message.to_dict(), ensure_ascii=False) + "\n")
            if raw is not None:
                eml_dir = self.data_dir / "eml"
                eml_dir.mkdir(exist_ok=True)
                (eml_dir / f"{message.id}.eml").write_bytes(raw)
        return message

    def find_messages(
        self, *, provider: str | None = None, to: str | None = None, idempotency_key: str | None = None
    ) -> list[Message]:
        return [
            m.complete()
            for m in self.messages
            if (provider is None or m.provider == provider)
            and (to is None or m.recipient == to)
            and (idempotency_key is None or m.idempotency_key == idempotency_key)
        ]

    def find_message(self, message_id: str) -> Message | None:
        """By the sandbox id or the provider's id (Twilio SID, X-Message-Id, FCM name)."""
        for message in reversed(self.messages):
            if message_id in (message.id, message.provider_message_id):
                return message.complete()
        return None

    def counts(self) -> dict[str, Any]:
        providers: dict[str, dict[str, Any]] = {}
        for message in self.messages:
            entry = providers.setdefault(
                message.provider, {"messages": 0, "requests": 0, "idempotency_keys": Counter()}
            )
            entry["messages"] += 1
            if message.idempotency_key:
                entry["idempotency_keys"][message.idempotency_key] += 1
        for attempt in self.attempts:
            entry = providers.setdefault(
                attempt.provider, {"messages": 0, "requests": 0, "idempotency_keys": Counter()}
            )
            entry["requests"] += 1
        duplicates = {
            name: {key: n for key, n in entry["idempotency_keys"].items() if n > 1} for name, entry in providers.items()
        }
        return {
            "total": len(self.messages),
            "providers": {
                name: {**entry, "idempotency_keys": dict(entry["idempotency_keys"])}
                for name, entry in providers.items()
            },
            "duplicates": {name: keys for name, keys in duplicates.items() if keys},
        }

    # -- attempts and faults --------------------------------------------------------------

    def attempt(
        self,
        provider: str,
        status: int | str,
        recipients: list[str],
        *,
        idempotency_key: str | None = None,
        fault: Fault | None = None,
    ) -> None:
        self.attempts.append(
            Attempt(
                provider=provider,
                status=status,
                recipients=recipients,
                idempotency_key=idempotency_key,
                fault_id=fault.id if fault else None,
            )
        )

    def take_fault(self, provider: str, recipients: list[str], *, targeted: bool | None = None) -> Fault | None:
        """The first live rule for this request, counted as used.

        `targeted` narrows to rules with (True) or without (False) a `match`, for SMTP,
        which checks recipient rules at RCPT TO and the others at DATA.
        """
        for fault in self.faults:
            if targeted is not None and (fault.match is not None) != targeted:
                continue
            if fault.applies_to(provider, recipients):
                fault.hits += 1
                return fault
        return None

    # -- lifecycle ------------------------------------------------------------------------

    def reset(self) -> None:
        self.messages.clear()
        self.attempts.clear()
        self.faults.clear()
        self.webhook_secrets.clear()
        self.auto_callbacks.clear()
        self._seq = itertools.count(1)
        if self.data_dir is not None:
            (self.data_dir / "messages.jsonl").write_text("", encoding="utf-8")
            eml_dir = self.data_dir / "eml"
            if eml_dir.is_dir():
                for path in eml_dir.glob("*.eml"):
                    path.unlink()

    def _load(self) -> None:
        assert self.data_dir is not None
        path = self.data_dir / "messages.jsonl"
        if not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                message = Message.from_dict(json.loads(line))
            except (ValueError, TypeError):
                log.warning("Skipping an unreadable line in %s", path)
                continue
            self.messages.append(message)
        if self.messages:
            self._seq = itertools.count(max(m.seq for m in self.messages) + 1)
