"""slack_sdk's WebhookClient and WebClient against the sandbox."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from sandbox.config import DEFAULT_SLACK_BOT_TOKEN
from sandbox.testing import SandboxClient, SandboxProcess

HOOK = "T000SANDBOX/B000SANDBOX/abcdefghijklmnopqrstuvwx"


def webhook_for(sandbox: SandboxProcess, hook: str = HOOK) -> WebhookClient:
    return WebhookClient(f"{sandbox.http_url}/slack/services/{hook}")


def test_an_incoming_webhook_post_answers_ok(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    response = webhook_for(sandbox).send(
        text="Deploy finished", blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}]
    )

    assert response.status_code == 200
    assert response.body == "ok"
    [message] = sandbox_client.messages("slack")
    assert message["recipient"] == HOOK
    assert message["text"] == "Deploy finished"
    assert message["extra"]["payload"]["blocks"][0]["type"] == "section"


def test_an_empty_webhook_payload_is_refused_with_slacks_error_text(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    response = webhook_for(sandbox).send_dict({"username": "bot"})

    assert (response.status_code, response.body) == (400, "no_text")


def test_a_removed_webhook_fault_answers_no_service(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    sandbox_client.add_fault("slack", "no_service", match=HOOK)

    response = webhook_for(sandbox).send(text="hi")

    assert (response.status_code, response.body) == (404, "no_service")
    assert sandbox_client.messages() == []


def test_an_archived_channel_answers_410(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    sandbox_client.add_fault("slack", "channel_is_archived", times=1)

    first = webhook_for(sandbox).send(text="hi")
    second = webhook_for(sandbox).send(text="hi")

    assert (first.status_code, first.body) == (410, "channel_is_archived")
    assert (second.status_code, second.body) == (200, "ok")


def test_chat_post_message_through_web_client(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    client = WebClient(token=DEFAULT_SLACK_BOT_TOKEN, base_url=f"{sandbox.http_url}/slack/api/")

    response = client.chat_postMessage(channel="#alerts", text="Disk almost full")

    assert response["ok"] is True
    assert response["channel"].startswith("C")
    assert response["message"]["text"] == "Disk almost full"
    [message] = sandbox_client.messages("slack")
    assert message["recipient"] == "#alerts"


def test_chat_post_message_errors_raise_slack_api_error(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    sandbox_client.add_fault("slack", "channel_not_found", match="#gone")
    client = WebClient(token=DEFAULT_SLACK_BOT_TOKEN, base_url=f"{sandbox.http_url}/slack/api/")

    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="#gone", text="hi")
    with pytest.raises(SlackApiError) as unauthorised:
        WebClient(token="xoxb-wrong", base_url=f"{sandbox.http_url}/slack/api/").chat_postMessage(
            channel="#alerts", text="hi"
        )

    assert caught.value.response["error"] == "channel_not_found"
    assert unauthorised.value.response["error"] == "invalid_auth"
