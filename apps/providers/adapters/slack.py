"""Chat through Slack: an incoming webhook, or `chat.postMessage` with a bot token (`slack_sdk`).

The recipient's address picks the API: a URL is an incoming webhook, anything else a channel
for `chat.postMessage` (`WebClient`); with no address, the config's webhook URL or default
channel is used. The delivery id travels in the message metadata
(`event_payload.idempotency_key`) and an `Idempotency-Key` header. slack_sdk's own retry
handlers are off: Signalbox owns retries.

Incoming webhooks are posted through `apps.core.net.safe_post`, like Teams and Discord, not
slack_sdk's `WebhookClient`: a recipient or tenant supplies the URL, and the client would resolve
the host again itself and follow a 302 as a GET, putting whatever answered into `last_error`.
`safe_post` resolves once, refuses internal addresses (unless `SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE`),
connects to the checked address and follows no redirect (a 3xx is permanent, `redirect`).
`chat.postMessage` on a tenant's `api_base_url` goes through the same guard (`GuardedWebClient`,
the guard's urllib opener); an internal address or a redirect is permanent, a name that does not
resolve transient (`apps.providers.classify.from_network_error`).
Slack's answers keep their meaning: the error word (`no_service`, `invalid_token`, …) is the
code, and 429/5xx are transient with `Retry-After`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.request import Request

from django.conf import settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from apps.core.net import guarded_opener, safe_post
from apps.providers.adapters import Adapter, default_timeout, url_problems
from apps.providers.base import Channel, Message, SendResult
from apps.providers.classify import from_network_error, from_status, is_transient_status, parse_retry_after, truncate

NAME = "slack"
DEFAULT_API_BASE_URL = "https://slack.com/api/"
TRANSIENT_ERRORS = frozenset({"ratelimited", "rate_limited", "fatal_error", "internal_error", "service_unavailable",
                              "request_timeout"})  # fmt: skip
AUTH_ERRORS = frozenset({"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired"})
# What hooks.slack.com answers on an error: one word. Anything else is not Slack's, and not a code.
ERROR_WORD = re.compile(r"[a-z][a-z0-9_]{0,63}")


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def metadata(message: Message) -> dict[str, Any]:
    return {"event_type": "signalbox_notification", "event_payload": {"idempotency_key": message.idempotency_key}}


class GuardedWebClient(WebClient):
    """slack_sdk's WebClient with its requests through the egress guard's urllib opener
    (apps/core/net.py) instead of `urlopen`, which would resolve the name again, use the
    environment's proxy and follow redirects."""

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        response = guarded_opener(context=self.ssl).open(req, timeout=self.timeout)
        with response:
            charset = response.headers.get_content_charset() or "utf-8"
            body = response.read().decode(charset)
        return {"status": response.status, "headers": response.headers, "body": body}


class SlackProvider(Adapter):
    name = NAME
    channel = Channel.CHAT
    secret_fields = ("bot_token", "webhook_url")
    option_fields = ("default_channel", "api_base_url", "timeout")
    required_fields = ("bot_token|webhook_url",)

    def __init__(
        self,
        *,
        bot_token: str = "",
        webhook_url: str = "",
        default_channel: str = "",
        api_base_url: str = DEFAULT_API_BASE_URL,
        timeout: float | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.webhook_url = webhook_url
        self.default_channel = default_channel
        # slack_sdk joins "base_url + method": the trailing slash matters.
        self.api_base_url = api_base_url.rstrip("/") + "/"
        self.timeout = float(timeout or default_timeout())

    @property
    def has_default_destination(self) -> bool:
        """Whether a message without an address has somewhere to go (read by the pipeline, which
        otherwise suppresses it as `no_address`): the webhook, or the default channel with a token."""
        return bool(self.webhook_url or (self.default_channel and self.bot_token))

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        return {
            "bot_token": settings.SLACK_BOT_TOKEN,
            "webhook_url": settings.SLACK_WEBHOOK_URL,
            "default_channel": settings.SLACK_DEFAULT_CHANNEL,
            "api_base_url": settings.SLACK_API_BASE_URL,
        }

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if config.get("webhook_url") and not is_url(config["webhook_url"]):
            errors["webhook_url"] = ["An https://hooks.slack.com/services/… URL."]
        elif config.get("webhook_url") and (problems := url_problems(config["webhook_url"])):
            errors["webhook_url"] = problems
        if config.get("bot_token") and not str(config["bot_token"]).startswith("xox"):
            errors["bot_token"] = ["A bot token starts with xoxb-."]
        if config.get("api_base_url") and (problems := url_problems(config["api_base_url"])):
            errors["api_base_url"] = problems
        return errors

    def send(self, message: Message) -> SendResult:
        target = str(message.to or "") or self.webhook_url or self.default_channel
        text = message.text or message.title or message.subject
        blocks = message.data.get("blocks") or None
        try:
            if is_url(target):
                return self._send_webhook(target, message, text, blocks)
            if not target:
                return SendResult.permanent(NAME, "No channel or webhook URL to post to.", code="no_target")
            if not self.bot_token:
                return SendResult.permanent(NAME, "chat.postMessage needs a bot token.", code="not_configured")
            return self._post_message(target, message, text, blocks)
        except SlackClientError as exc:
            return SendResult.transient(NAME, truncate(exc), code="client_error")
        except Exception as exc:
            network = from_network_error(NAME, exc)
            if network is None:
                raise
            return network

    def _send_webhook(self, url: str, message: Message, text: str, blocks: Any) -> SendResult:
        payload = {"text": text, "blocks": blocks, "metadata": metadata(message)}
        body = json.dumps({k: v for k, v in payload.items() if v is not None}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.idempotency_key}
        response, content = safe_post(url, body=body, headers=headers, timeout=self.timeout)
        status = response.status_code
        if 200 <= status < 300:
            return SendResult.ok(NAME, message.idempotency_key, status_code=status)
        if 300 <= status < 400:
            return SendResult.permanent(
                NAME, f"Redirects are not followed ({status}).", code="redirect", status_code=status
            )
        word = content.decode("utf-8", "replace").strip()
        code = word if ERROR_WORD.fullmatch(word) else ""
        return from_status(NAME, status, code=code, detail=truncate(word), headers=response.headers)

    def _post_message(self, channel: str, message: Message, text: str, blocks: Any) -> SendResult:
        client = (WebClient if self.trusted else GuardedWebClient)(
            token=self.bot_token,
            base_url=self.api_base_url,
            timeout=int(max(1, self.timeout)),
            headers={"Idempotency-Key": message.idempotency_key},
            retry_handlers=[],
        )
        try:
            response = client.chat_postMessage(channel=channel, text=text, blocks=blocks, metadata=metadata(message))
        except SlackApiError as exc:
            status = int(exc.response.status_code)
            error = str(exc.response.get("error") or f"http_{status}")
            if error in AUTH_ERRORS:
                return SendResult.permanent(NAME, error, code="auth_failed", status_code=status)
            if is_transient_status(status) or error in TRANSIENT_ERRORS:
                retry_after = parse_retry_after(exc.response.headers)
                return SendResult.transient(NAME, error, code=error, status_code=status, retry_after=retry_after)
            return SendResult.permanent(NAME, error, code=error, status_code=status)
        return SendResult.ok(NAME, str(response.get("ts") or ""), detail=str(response.get("channel") or ""))
