"""The webhook channel, and Microsoft Teams / Discord incoming webhooks: JSON POSTs to a URL.

All three post through `apps.core.net.safe_post`: the host is resolved once and must be
public (unless `SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE`), the connection is pinned to that
address, and redirects are not followed (a 3xx is permanent, `redirect`, and its body is not
shown). A Teams or Discord config's `webhook_url` is checked when saved as well (`url_problems`).

The webhook channel posts the rendered JSON (`Message.data`) signed per Standard Webhooks
(`webhook-id` = the delivery id, `webhook-timestamp`, `webhook-signature`) with the
recipient's own secret when it has one (`Message.signing_secret`), else the config's.
A 410 means the receiver is gone for good (code `gone`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests
from django.conf import settings

from apps.core.net import UnresolvableHost, UnsafeUrl, safe_post
from apps.core.signing import InvalidSecret, secret_check, signed_headers
from apps.providers.adapters import Adapter, default_timeout, url_problems
from apps.providers.base import Channel, Message, SendResult
from apps.providers.classify import from_network_error, from_status, truncate


def post_json(provider: str, url: str, body: str, *, headers: dict[str, str], timeout: float) -> SendResult:
    """POSTs through the SSRF guard and classifies the answer; the message id is left to the caller."""
    try:
        response, content = safe_post(
            url, body=body.encode(), headers={"Content-Type": "application/json", **headers}, timeout=timeout
        )
    except UnsafeUrl as exc:
        return SendResult.permanent(provider, exc.message, code=exc.code)
    except UnresolvableHost as exc:
        return SendResult.transient(provider, exc.message, code=exc.code)
    except requests.RequestException as exc:
        network = from_network_error(provider, exc)
        return network or SendResult.transient(provider, truncate(exc), code="request_failed")
    status = response.status_code
    text = truncate(content.decode("utf-8", "replace") or f"HTTP {status}")
    if 200 <= status < 300:
        return SendResult.ok(provider, "", status_code=status, detail=text)
    if 300 <= status < 400:
        return SendResult.permanent(
            provider, f"Redirects are not followed ({status}).", code="redirect", status_code=status
        )
    if status == 410:
        return SendResult.permanent(provider, text, code="gone", status_code=status)
    return from_status(provider, status, detail=text, headers=response.headers)


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


class WebhookProvider(Adapter):
    name = "webhook"
    channel = Channel.WEBHOOK
    secret_fields = ("signing_secret",)
    option_fields = ("timeout",)
    required_fields = ("signing_secret",)

    def __init__(self, *, signing_secret: str = "", timeout: float | None = None) -> None:
        self.signing_secret = signing_secret
        self.timeout = float(timeout or default_timeout())

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        return {"signing_secret": settings.SIGNALBOX_WEBHOOK_SIGNING_SECRET}

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, list[str]]:
        if not config.get("signing_secret"):
            return {}
        try:
            secret_check(str(config["signing_secret"]))
        except InvalidSecret as exc:
            return {"signing_secret": [exc.message]}
        return {}

    def send(self, message: Message) -> SendResult:
        if not is_url(message.to):
            return SendResult.permanent(self.name, "The recipient has no webhook URL.", code="no_target")
        secret = message.signing_secret or self.signing_secret
        if not secret:
            return SendResult.permanent(self.name, "No signing secret is configured.", code="not_configured")
        payload = message.data or {
            k: v for k, v in (("subject", message.subject), ("title", message.title), ("text", message.text)) if v
        }
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str)
        signed = signed_headers(secrets=[secret], msg_id=message.idempotency_key, body=body)
        own = {k: v for k, v in message.headers.items() if not k.lower().startswith("webhook-")}
        result = post_json(self.name, message.to, body, headers={**own, **signed}, timeout=self.timeout)
        if result.accepted:
            return SendResult.ok(self.name, message.idempotency_key, status_code=result.status_code)
        return result


class _ChatHook(Adapter):
    """An incoming webhook that takes a small JSON body: the URL is the credential."""

    channel = Channel.CHAT
    secret_fields = ("webhook_url",)
    option_fields = ("timeout",)
    # None: a recipient may bring its own URL.

    def __init__(self, *, webhook_url: str = "", timeout: float | None = None) -> None:
        self.webhook_url = webhook_url
        self.timeout = float(timeout or default_timeout())

    @property
    def has_default_destination(self) -> bool:
        """Whether a message without an address has somewhere to go: the config's own hook."""
        return bool(self.webhook_url)

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, list[str]]:
        if config.get("webhook_url") and not is_url(config["webhook_url"]):
            return {"webhook_url": ["An https:// incoming webhook URL."]}
        if config.get("webhook_url") and (problems := url_problems(config["webhook_url"])):
            return {"webhook_url": problems}
        return {}

    def payload(self, message: Message) -> dict[str, Any]:
        raise NotImplementedError

    def send(self, message: Message) -> SendResult:
        url = message.to if is_url(message.to) else self.webhook_url
        if not url:
            return SendResult.permanent(self.name, "No webhook URL to post to.", code="no_target")
        body = json.dumps(self.payload(message), separators=(",", ":"))
        headers = {"Idempotency-Key": message.idempotency_key}
        result = post_json(self.name, url, body, headers=headers, timeout=self.timeout)
        if result.accepted:
            return SendResult.ok(self.name, message.idempotency_key, status_code=result.status_code)
        return result


class TeamsProvider(_ChatHook):
    """A Microsoft Teams incoming webhook (Office 365 connector), posting `{"title", "text"}`."""

    name = "teams"

    def payload(self, message: Message) -> dict[str, Any]:
        body: dict[str, Any] = {"text": message.text or message.subject}
        if message.title or message.subject:
            body["title"] = message.title or message.subject
        return body


class DiscordProvider(_ChatHook):
    """A Discord webhook (answers 204; errors, including 429 with Retry-After, synchronously)."""

    name = "discord"
    MAX_CONTENT = 2000

    def payload(self, message: Message) -> dict[str, Any]:
        text = message.text or message.title or message.subject
        return {"content": text[: self.MAX_CONTENT], "allowed_mentions": {"parse": []}}
