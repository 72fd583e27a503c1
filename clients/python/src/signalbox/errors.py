"""Exceptions: every API refusal is a `SignalboxError` carrying the API's `{code, message, fields}`.

The class says what kind of refusal it was (by HTTP status), `.code` says exactly which one.
"""

from __future__ import annotations

from typing import Any


class SignalboxError(Exception):
    """An answer of 400 or more from the API, or a failure to reach it."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        fields: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.message = message
        self.code = code
        self.status = status
        self.fields: dict[str, Any] = fields or {}
        self.headers: dict[str, str] = headers or {}


class BadRequest(SignalboxError):
    """400: the request was refused as it stands (an unknown template, a bad cursor…)."""


class ValidationError(BadRequest):
    """400 `validation_error`: `.fields` maps each field to its messages."""


class AuthenticationError(SignalboxError):
    """401: no key, a malformed, unknown, revoked or expired key."""


class PermissionDenied(SignalboxError):
    """403: the key lacks the scope this call needs."""


class NotFound(SignalboxError):
    """404."""


class Conflict(SignalboxError):
    """409: the object's state or an existing object forbids it (`recipient_exists`, `task_finished`…)."""


class Unprocessable(SignalboxError):
    """422: e.g. `idempotency_key_reused` (the same key with another body)."""


class RateLimited(SignalboxError):
    """429 once retries are spent; `.retry_after` is the server's advice in seconds, if given."""

    @property
    def retry_after(self) -> float | None:
        from signalbox._core import parse_retry_after

        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(SignalboxError):
    """5xx once retries are spent (or at once, for a request that was not safe to repeat)."""


class APIConnectionError(SignalboxError):
    """The API could not be reached (connection refused, timeout) once retries are spent."""


class WaitTimeout(SignalboxError):
    """`tasks.wait` ran out of time; `.task` is the last state seen."""

    def __init__(self, message: str, *, task: Any) -> None:
        super().__init__(message, code="wait_timeout")
        self.task = task


class WebhookVerificationError(SignalboxError):
    """A webhook whose signature, id or timestamp does not check out: do not trust its body."""


BY_STATUS: dict[int, type[SignalboxError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    422: Unprocessable,
    429: RateLimited,
}


def error_for(status: int, body: Any, headers: dict[str, str]) -> SignalboxError:
    """The exception for an error answer; a body not in the API's shape still gives a usable error."""
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code, message, fields = body["code"], str(body.get("message", "")), body.get("fields") or {}
    else:
        code, message, fields = f"http_{status}", (str(body)[:200] if body else f"HTTP {status}"), {}
    cls = BY_STATUS.get(status, ServerError if status >= 500 else SignalboxError)
    if cls is BadRequest and code == "validation_error":
        cls = ValidationError
    return cls(message, code=code, status=status, fields=fields, headers=headers)
