"""The webhook channel: Standard Webhooks signatures the receiver verifies, answers classified, SSRF refused."""

from __future__ import annotations

from django.test import override_settings

from apps.providers.adapters.webhook import WebhookProvider
from apps.providers.base import Channel, Outcome
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import WEBHOOK_SECRET, message

OTHER_SECRET = "whsec_dGhpcy1pcy1hbm90aGVyLXNlY3JldC1vZi0zMi1ieXRlcw=="


def hook(url: str, key: str = "delivery-1", **fields):
    return message(Channel.WEBHOOK, url, key, **{"data": {"order": 7, "status": "shipped"}, **fields})


def test_the_rendered_json_is_posted_with_a_signature_the_receiver_verifies(
    webhook: WebhookProvider, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    sandbox_client.set_webhook_secret("orders", WEBHOOK_SECRET)

    result = webhook.send(hook(f"{sandbox.http_url}/hooks/orders"))

    assert (result.outcome, result.message_id) == (Outcome.ACCEPTED, "delivery-1")
    [received] = sandbox_client.messages("webhook")
    assert received["extra"]["json"] == {"order": 7, "status": "shipped"}
    assert received["extra"]["signature_valid"] is True
    assert received["headers"]["webhook-id"] == "delivery-1"
    assert received["idempotency_key"] == "delivery-1"


def test_a_recipients_own_secret_signs_instead_of_the_configured_one(
    webhook: WebhookProvider, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    sandbox_client.set_webhook_secret("orders", OTHER_SECRET)

    result = webhook.send(hook(f"{sandbox.http_url}/hooks/orders", signing_secret=OTHER_SECRET))

    assert result.outcome is Outcome.ACCEPTED
    assert sandbox_client.messages("webhook")[0]["extra"]["signature_valid"] is True


def test_a_receiver_that_is_gone_is_permanent(
    webhook: WebhookProvider, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    sandbox_client.add_fault("webhook", 410, match="orders")

    result = webhook.send(hook(f"{sandbox.http_url}/hooks/orders"))

    assert (result.outcome, result.code, result.status_code) == (Outcome.PERMANENT, "gone", 410)


def test_other_4xx_are_permanent_and_5xx_or_429_transient(
    webhook: WebhookProvider, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    sandbox_client.add_fault("webhook", 422, match="invalid")
    sandbox_client.add_fault("webhook", 503, match="down", retry_after=20)
    sandbox_client.add_fault("webhook", 429, match="busy", retry_after=3)

    invalid = webhook.send(hook(f"{sandbox.http_url}/hooks/invalid"))
    down = webhook.send(hook(f"{sandbox.http_url}/hooks/down"))
    busy = webhook.send(hook(f"{sandbox.http_url}/hooks/busy"))

    assert (invalid.outcome, invalid.code) == (Outcome.PERMANENT, "http_422")
    assert (down.outcome, down.retry_after) == (Outcome.TRANSIENT, 20.0)
    assert (busy.outcome, busy.retry_after) == (Outcome.TRANSIENT, 3.0)


def test_a_redirect_is_not_followed(webhook: WebhookProvider, sandbox: SandboxProcess, sandbox_client: SandboxClient):
    sandbox_client.add_fault("webhook", 302, match="moved")

    result = webhook.send(hook(f"{sandbox.http_url}/hooks/moved"))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "redirect")
    assert len(sandbox_client.requests("webhook")) == 1


def test_a_receiver_too_slow_to_answer_is_transient(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    sandbox_client.add_fault("webhook", timeout=3, match="slow")
    provider = WebhookProvider.from_config({"signing_secret": WEBHOOK_SECRET, "timeout": 0.5})

    result = provider.send(hook(f"{sandbox.http_url}/hooks/slow"))

    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "timeout")


@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_a_private_address_is_refused_and_nothing_is_sent(
    webhook: WebhookProvider, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    for url in (f"{sandbox.http_url}/hooks/orders", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/x"):
        result = webhook.send(hook(url))
        assert (result.outcome, result.code) == (Outcome.PERMANENT, "unsafe_url"), url
    assert sandbox_client.requests("webhook") == []


def test_without_a_secret_nothing_is_sent_unsigned(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    provider = WebhookProvider.from_config({})

    result = provider.send(hook(f"{sandbox.http_url}/hooks/orders"))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "not_configured")
    assert sandbox_client.requests("webhook") == []
