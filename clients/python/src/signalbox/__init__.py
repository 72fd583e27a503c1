"""Signalbox's Python client: `Client` (sync) and `AsyncClient` (asyncio), both on httpx.

from signalbox import Client
with Client("sbx_…", "https://signalbox.example.com") as sb:
    sb.notifications.send(template="welcome", recipients=["user-42"])
"""

from __future__ import annotations

__version__ = "0.1.0"

from signalbox.async_client import AsyncClient
from signalbox.client import Client
from signalbox.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequest,
    Conflict,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    SignalboxError,
    Unprocessable,
    ValidationError,
    WaitTimeout,
    WebhookVerificationError,
)
from signalbox.types import Page
from signalbox.webhooks import verify as verify_webhook

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "Conflict",
    "NotFound",
    "Page",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "SignalboxError",
    "Unprocessable",
    "ValidationError",
    "WaitTimeout",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
