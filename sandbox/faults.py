"""Fault rules: how a test makes a provider fail, slow down or hang.

A rule names a provider, optionally a recipient it matches, and what to do: answer with an
error (`status`: an HTTP status, or a provider code such as Twilio's 21211, FCM's
UNREGISTERED, Slack's `no_service`, SMTP's 451/550), add `delay_ms`, or hang past the
client's timeout. `times` counts the requests it still applies to; None means always.

A rule without a `status` only slows the answer down: the provider still accepts and
records the message, which is how a test plays "the provider sent it but the response was
lost" (the case idempotency keys exist for).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from sandbox.config import PROVIDERS

_fault_ids = itertools.count(1)


class FaultError(ValueError):
    """A fault rule sent to the control API is malformed."""


@dataclass
class Fault:
    provider: str
    match: str | None = None
    status: int | str | None = None
    retry_after: int | None = None
    delay_ms: int = 0
    timeout: float | None = None
    times: int | None = None
    hits: int = 0
    id: str = field(default_factory=lambda: f"fault_{next(_fault_ids)}")

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def applies_to(self, provider: str, recipients: list[str]) -> bool:
        if self.provider != provider or self.exhausted:
            return False
        return self.match is None or self.match in recipients

    async def wait(self) -> None:
        """Sleep for the rule's delay, then for its hang if it has one."""
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        if self.timeout:
            await asyncio.sleep(self.timeout)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "match": self.match,
            "status": self.status,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "timeout": self.timeout,
            "times": self.times,
            "hits": self.hits,
            "remaining": None if self.times is None else max(self.times - self.hits, 0),
        }


def fault_from_json(body: Any, *, hang_seconds: float) -> Fault:
    """Validate a control-API fault body; `timeout: true` hangs for `hang_seconds`."""
    if not isinstance(body, dict):
        raise FaultError("A fault is a JSON object.")
    provider = body.get("provider")
    if provider not in PROVIDERS:
        raise FaultError(f"provider must be one of {', '.join(PROVIDERS)}.")
    status = body.get("status")
    if status is not None and not isinstance(status, (int, str)):
        raise FaultError("status must be an integer, a provider error code string, or null.")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    match = body.get("match", body.get("to"))
    if match is not None and not isinstance(match, str):
        raise FaultError("match must be a string (the recipient).")
    times = body.get("times")
    if times is not None and (not isinstance(times, int) or times < 1):
        raise FaultError("times must be a positive integer or null (always).")
    retry_after = body.get("retry_after")
    if retry_after is not None and (not isinstance(retry_after, int) or retry_after < 0):
        raise FaultError("retry_after must be a non-negative integer (seconds).")
    delay_ms = body.get("delay_ms") or 0
    if not isinstance(delay_ms, int) or delay_ms < 0:
        raise FaultError("delay_ms must be a non-negative integer.")
    raw_timeout = body.get("timeout")
    timeout: float | None
    if raw_timeout is True:
        timeout = hang_seconds
    elif raw_timeout in (None, False):
        timeout = None
    elif isinstance(raw_timeout, (int, float)) and raw_timeout > 0:
        timeout = float(raw_timeout)
    else:
        raise FaultError("timeout must be true, false, or a number of seconds to hang.")
    if status is None and timeout is None and not delay_ms:
        raise FaultError("A fault needs a status, a delay_ms or a timeout.")
    return Fault(
        provider=provider,
        match=match,
        status=status,
        retry_after=retry_after,
        delay_ms=delay_ms,
        timeout=timeout,
        times=times,
    )
