"""SMS through Twilio's Messages API, with the `twilio` SDK.

Sends from a number or through a Messaging Service, asks Twilio to report delivery to
Signalbox's own `PUBLIC_URL/callbacks/twilio/status?delivery=<id>` (the query is covered by
Twilio's signature, so the callback finds its delivery without a search), and passes the delivery id as
`I-Twilio-Idempotency-Token` (the SDK has no parameter for it, hence the HTTP client below),
so a retry of a send whose answer was lost does not text the person twice.

A read timeout or a connection dropped after the request was written is `ambiguous` (Twilio may
have queued the message; its status callback will say so: `reconciles`); a refused connection
or a connect timeout is not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from apps.core.net import guarded_session
from apps.providers.adapters import Adapter, default_timeout, url_problems
from apps.providers.base import Channel, Message, SendResult
from apps.providers.classify import (
    from_network_error,
    from_status,
    is_transient_status,
    parse_retry_after,
    sent_then_lost,
    truncate,
)

NAME = "twilio"
# The SDK logs each request line by line at INFO, a dozen lines per SMS; its own warnings are
# enough unless LOGGING turns this logger up.
SDK_LOG = logging.getLogger("apps.providers.adapters.twilio.sdk")
if SDK_LOG.level == logging.NOTSET:
    SDK_LOG.setLevel(logging.WARNING)
IDEMPOTENCY_HEADER = "I-Twilio-Idempotency-Token"
STATUS_CALLBACK_PATH = "/callbacks/twilio/status"


def status_callback_url(delivery_id: str) -> str:
    return f"{settings.PUBLIC_URL}{STATUS_CALLBACK_PATH}?{urlencode({'delivery': delivery_id})}"


class IdempotentHttpClient(TwilioHttpClient):
    """Adds the idempotency token to every request and keeps the last answer's headers."""

    def __init__(self, token: str, *, timeout: float, guarded: bool = True) -> None:
        super().__init__(timeout=timeout, logger=SDK_LOG)
        if guarded:  # a tenant's base URL: through the egress guard (apps/core/net.py)
            self.session = guarded_session()
        self.token = token
        self.last_headers: Mapping[str, Any] = {}

    def request(self, method: str, url: str, *args: Any, headers: dict[str, str] | None = None, **kw: Any) -> Response:
        response = super().request(
            method, url, *args, headers={**(headers or {}), IDEMPOTENCY_HEADER: self.token}, **kw
        )
        self.last_headers = response.headers or {}
        return response


def from_rest_error(exc: TwilioRestException, headers: Mapping[str, Any]) -> SendResult:
    status = int(exc.status)
    detail = truncate(f"{exc.code}: {exc.msg}" if exc.code else exc.msg or f"HTTP {status}")
    if status == 401:
        return SendResult.permanent(NAME, detail, code="auth_failed", status_code=status)
    code = str(exc.code) if exc.code else ""
    if is_transient_status(status):
        return SendResult.transient(
            NAME, detail, code=code or f"http_{status}", status_code=status, retry_after=parse_retry_after(headers)
        )
    return from_status(NAME, status, code=code, detail=detail)


class TwilioProvider(Adapter):
    name = NAME
    channel = Channel.SMS
    secret_fields = ("auth_token",)
    option_fields = ("account_sid", "from_number", "messaging_service_sid", "api_base_url", "timeout")
    required_fields = ("account_sid", "auth_token", "from_number|messaging_service_sid")
    # Status callbacks name the delivery (`?delivery=<id>`, apps/notifications/services/twilio_status.py).
    reconciles = True

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str = "",
        messaging_service_sid: str = "",
        api_base_url: str = "",
        timeout: float | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.api_base_url = api_base_url.rstrip("/")
        self.timeout = float(timeout or default_timeout())

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        return {
            "account_sid": settings.TWILIO_ACCOUNT_SID,
            "auth_token": settings.TWILIO_AUTH_TOKEN,
            "from_number": settings.TWILIO_FROM,
            "messaging_service_sid": settings.TWILIO_MESSAGING_SERVICE_SID,
            "api_base_url": settings.TWILIO_API_BASE_URL,
        }

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if config.get("account_sid") and not str(config["account_sid"]).startswith("AC"):
            errors["account_sid"] = ["An account SID starts with AC (API keys, SK…, are not supported)."]
        if config.get("messaging_service_sid") and not str(config["messaging_service_sid"]).startswith("MG"):
            errors["messaging_service_sid"] = ["A Messaging Service SID starts with MG."]
        if config.get("api_base_url") and (problems := url_problems(config["api_base_url"])):
            errors["api_base_url"] = problems
        return errors

    def _client(self, http_client: IdempotentHttpClient) -> Client:
        client = Client(self.account_sid, self.auth_token, http_client=http_client)
        if self.api_base_url:
            client.api.base_url = self.api_base_url
        return client

    def send(self, message: Message) -> SendResult:
        http_client = IdempotentHttpClient(message.idempotency_key, timeout=self.timeout, guarded=not self.trusted)
        try:
            created = self._client(http_client).messages.create(
                to=str(message.to),
                body=message.text,
                from_=self.from_number if not self.messaging_service_sid and self.from_number else values.unset,
                messaging_service_sid=self.messaging_service_sid or values.unset,
                status_callback=status_callback_url(message.idempotency_key),
            )
        except TwilioRestException as exc:
            return from_rest_error(exc, http_client.last_headers)
        except TwilioException as exc:  # an answer the SDK could not read
            return SendResult.transient(NAME, truncate(exc), code="bad_response")
        except Exception as exc:
            network = from_network_error(NAME, exc)
            if network is None:
                raise
            return dataclasses.replace(network, ambiguous=True) if sent_then_lost(exc) else network
        return SendResult.ok(NAME, str(created.sid), detail=str(created.status or ""))
