"""Chat: Slack through slack_sdk (incoming webhook and chat.postMessage), Teams and Discord webhooks."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import override_settings

from apps.providers.adapters.slack import SlackProvider
from apps.providers.adapters.webhook import DiscordProvider, TeamsProvider
from apps.providers.base import Channel, Outcome
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import message, sandbox_config_for


def chat(to: str, key: str = "delivery-1", **fields):
    return message(Channel.CHAT, to, key, **{"text": "Deploy finished", **fields})


@pytest.fixture
def hook_url(sandbox: SandboxProcess) -> str:
    return f"{sandbox.http_url}/slack/services/T000/B000/secret-token"


def test_a_recipient_with_a_webhook_url_gets_an_incoming_webhook_post(
    slack: SlackProvider, sandbox_client: SandboxClient, hook_url: str
):
    result = slack.send(chat(hook_url))

    assert result.outcome is Outcome.ACCEPTED
    [received] = sandbox_client.messages("slack")
    assert received["recipient"] == "T000/B000/secret-token"
    assert received["text"] == "Deploy finished"
    assert received["extra"]["api"] == "incoming_webhook"
    assert received["idempotency_key"] == "delivery-1"


def test_a_channel_gets_chat_post_message_with_blocks_and_metadata(slack: SlackProvider, sandbox_client: SandboxClient):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished"}}]

    result = slack.send(chat("#deploys", data={"blocks": blocks}))

    assert result.outcome is Outcome.ACCEPTED and result.message_id
    [received] = sandbox_client.messages("slack")
    assert received["recipient"] == "#deploys"
    assert received["extra"]["api"] == "chat.postMessage"
    assert received["extra"]["payload"]["blocks"] == blocks
    assert received["idempotency_key"] == "delivery-1"
    assert received["provider_message_id"] == result.message_id


def test_without_an_address_the_default_channel_is_used(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    provider = SlackProvider.from_config(sandbox_config_for(sandbox, "slack", default_channel="#alerts"))

    provider.send(chat(""))

    assert sandbox_client.messages("slack")[0]["recipient"] == "#alerts"


def test_webhook_errors_are_classified_by_their_word(
    slack: SlackProvider, sandbox_client: SandboxClient, hook_url: str
):
    sandbox_client.add_fault("slack", "no_service", times=1)
    sandbox_client.add_fault("slack", "rate_limited", retry_after=9, times=1)

    gone = slack.send(chat(hook_url))
    limited = slack.send(chat(hook_url))

    assert (gone.outcome, gone.code, gone.status_code) == (Outcome.PERMANENT, "no_service", 404)
    assert (limited.outcome, limited.retry_after) == (Outcome.TRANSIENT, 9.0)


def test_web_api_errors_are_classified_by_their_word(slack: SlackProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("slack", "channel_not_found", match="#nowhere")
    sandbox_client.add_fault("slack", 429, match="#busy")
    sandbox_client.add_fault("slack", 500, match="#broken")

    missing = slack.send(chat("#nowhere"))
    busy = slack.send(chat("#busy"))
    broken = slack.send(chat("#broken"))

    assert (missing.outcome, missing.code) == (Outcome.PERMANENT, "channel_not_found")
    assert (busy.outcome, busy.code, busy.retry_after) == (Outcome.TRANSIENT, "ratelimited", 1.0)
    assert (broken.outcome, broken.code) == (Outcome.TRANSIENT, "fatal_error")


def test_a_wrong_bot_token_is_permanent(sandbox: SandboxProcess):
    provider = SlackProvider.from_config(sandbox_config_for(sandbox, "slack", bot_token="xoxb-wrong"))

    result = provider.send(chat("#deploys"))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "auth_failed")


@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_a_webhook_url_on_a_private_network_is_refused(
    slack: SlackProvider, sandbox_client: SandboxClient, hook_url: str
):
    result = slack.send(chat(hook_url))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "unsafe_url")
    assert sandbox_client.requests("slack") == []


class RedirectingHook:
    """A receiver on 127.0.0.1 whose hook answers 302 to an "internal" page that would answer a GET."""

    SECRET = "internal-service-secret"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.requests.append(("POST", self.path))
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{hook.port}/internal")
                self.end_headers()

            def do_GET(self) -> None:
                hook.requests.append(("GET", self.path))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(RedirectingHook.SECRET.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@pytest.fixture
def redirecting_hook() -> Iterator[RedirectingHook]:
    hook = RedirectingHook()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def test_an_incoming_webhook_that_redirects_is_not_followed(slack: SlackProvider, redirecting_hook: RedirectingHook):
    result = slack.send(chat(f"http://127.0.0.1:{redirecting_hook.port}/services/T000/B000/token"))

    assert (result.outcome, result.code, result.status_code) == (Outcome.PERMANENT, "redirect", 302)
    assert redirecting_hook.requests == [("POST", "/services/T000/B000/token")]
    assert RedirectingHook.SECRET not in result.detail


def test_an_incoming_webhook_connects_to_the_address_the_guard_checked(
    slack: SlackProvider, sandbox_client: SandboxClient, hook_url: str, monkeypatch: pytest.MonkeyPatch
):
    # The name resolves once, to the sandbox; any later lookup (a rebinding) would fail.
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.slack.test":
            return real_getaddrinfo(host, *args, **kwargs)
        lookups.append(host)
        if len(lookups) > 1:
            raise socket.gaierror(socket.EAI_NONAME, "rebound")
        return real_getaddrinfo("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    port = urlsplit(hook_url).port

    result = slack.send(chat(f"http://hooks.slack.test:{port}/slack/services/T000/B000/secret-token"))

    assert result.outcome is Outcome.ACCEPTED, result
    assert lookups == ["hooks.slack.test"]
    assert sandbox_client.messages("slack")[0]["idempotency_key"] == "delivery-1"


@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_a_loopback_webhook_url_is_refused_without_connecting(slack: SlackProvider, redirecting_hook: RedirectingHook):
    for url in (f"http://127.0.0.1:{redirecting_hook.port}/hook", f"http://localhost:{redirecting_hook.port}/hook"):
        result = slack.send(chat(url))
        assert (result.outcome, result.code) == (Outcome.PERMANENT, "unsafe_url"), url
        assert "loopback" in result.detail
    assert redirecting_hook.requests == []


def test_teams_and_discord_webhooks_get_their_json(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    teams = TeamsProvider.from_config({"webhook_url": f"{sandbox.http_url}/hooks/teams"})
    discord = DiscordProvider.from_config({})

    assert teams.send(chat("", title="Deploy")).outcome is Outcome.ACCEPTED
    assert discord.send(chat(f"{sandbox.http_url}/hooks/discord")).outcome is Outcome.ACCEPTED

    received = {m["recipient"]: m for m in sandbox_client.messages("webhook")}
    assert received["teams"]["extra"]["json"] == {"title": "Deploy", "text": "Deploy finished"}
    assert received["discord"]["extra"]["json"] == {"content": "Deploy finished", "allowed_mentions": {"parse": []}}
    assert received["discord"]["headers"]["Idempotency-Key"] == "delivery-1"
