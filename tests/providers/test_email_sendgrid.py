"""SendGrid through its SDK into the sandbox: one send, batches of personalizations, tracking, faults."""

from __future__ import annotations

import time

from django.conf import settings

from apps.providers import tracking
from apps.providers.adapters.sendgrid import SendGridProvider
from apps.providers.base import Channel, Outcome
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import message, sandbox_config_for

HTML = '<html><body><p>Track it <a href="https://shop.test/orders/7?a=1&amp;b=2">here</a>.</p></body></html>'


def email(to: str = "ada@example.com", key: str = "delivery-1", **fields):
    defaults = {"subject": "Your order shipped", "text": "It is on its way.", "html": "<p>On its way.</p>"}
    return message(Channel.EMAIL, to, key, **{**defaults, **fields})


def test_a_message_is_sent_with_its_parts_headers_and_idempotency_key(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    result = sendgrid.send(email(reply_to="support@acme.test", headers={"X-Campaign": "spring"}, category="orders"))

    assert result.outcome is Outcome.ACCEPTED and result.message_id
    [received] = sandbox_client.messages("sendgrid")
    assert received["recipient"] == "ada@example.com"
    assert received["sender"] == "noreply@acme.test"
    assert received["extra"]["from_name"] == "Acme"
    assert received["subject"] == "Your order shipped"
    assert received["text"] == "It is on its way."
    assert received["html"] == "<p>On its way.</p>"
    assert received["extra"]["reply_to"] == "support@acme.test"
    assert received["headers"]["X-Campaign"] == "spring"
    assert received["headers"]["X-Signalbox-Delivery"] == "delivery-1"
    assert received["extra"]["custom_args"] == {"idempotency_key": "delivery-1", "tenant_id": "tenant-1"}
    assert received["extra"]["categories"] == ["orders"]
    assert received["idempotency_key"] == "delivery-1"
    assert received["provider_message_id"] == result.message_id


def test_tracking_adds_a_pixel_and_signs_each_link(sendgrid: SendGridProvider, sandbox_client: SandboxClient):
    sendgrid.send(email(html=HTML, track_opens=True, track_clicks=True))

    html = sandbox_client.messages("sendgrid")[0]["html"]
    assert f'<img src="{settings.PUBLIC_URL}/t/o/' in html
    assert "https://shop.test/orders" not in html
    token = html.split(f"{settings.PUBLIC_URL}/t/c/")[1].split('"')[0]
    click = tracking.click_token_read(token)
    assert click.url == "https://shop.test/orders/7?a=1&b=2"
    assert click.delivery_id == "delivery-1"


def test_one_click_unsubscribe_is_a_per_recipient_header(sendgrid: SendGridProvider, sandbox_client: SandboxClient):
    sendgrid.send(email(recipient_id="ada", category="orders", list_unsubscribe=True))

    headers = sandbox_client.messages("sendgrid")[0]["headers"]
    assert headers["List-Unsubscribe"].startswith(f"<{settings.PUBLIC_URL}/u/")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_batch_goes_out_in_requests_of_1000_personalizations(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    messages = [email(f"user{i}@example.com", f"d-{i}") for i in range(1500)]

    results = sendgrid.send_batch(messages)

    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert len(sandbox_client.requests("sendgrid")) == 2
    counts = sandbox_client.counts()["providers"]["sendgrid"]["idempotency_keys"]
    assert len(counts) == 1500 and set(counts.values()) == {1}


def test_different_contents_in_one_batch_go_in_separate_requests(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    results = sendgrid.send_batch(
        [email("a@example.com", "d-1"), email("b@example.com", "d-2", subject="Other"), email("c@example.com", "d-3")]
    )

    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert len(sandbox_client.requests("sendgrid")) == 2
    assert {m["recipient"]: m["subject"] for m in sandbox_client.messages("sendgrid")} == {
        "a@example.com": "Your order shipped",
        "b@example.com": "Other",
        "c@example.com": "Your order shipped",
    }


def test_a_tracked_batch_carries_each_recipients_urls_as_substitutions(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    sendgrid.send_batch([email(f"u{i}@example.com", f"d-{i}", html=HTML, track_clicks=True) for i in range(3)])

    [request] = sandbox_client.requests("sendgrid")
    messages = sandbox_client.messages("sendgrid")
    # The sandbox records the shared body; SendGrid replaces the placeholder per personalization.
    assert all("-sbx-click-0-" in m["html"] for m in messages)
    assert request["status"] == 202


def test_an_invalid_address_in_a_batch_fails_alone_and_the_rest_is_sent(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    results = sendgrid.send_batch(
        [email("a@example.com", "d-1"), email("ada@localhost", "d-2"), email("c@example.com", "d-3")]
    )

    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.PERMANENT, Outcome.ACCEPTED]
    assert results[1].status_code == 400
    assert sorted(m["recipient"] for m in sandbox_client.messages("sendgrid")) == ["a@example.com", "c@example.com"]


def test_server_errors_are_transient(sendgrid: SendGridProvider, sandbox_client: SandboxClient):
    for status in (500, 503):
        sandbox_client.add_fault("sendgrid", status, times=1)
        result = sendgrid.send(email())
        assert (result.outcome, result.status_code) == (Outcome.TRANSIENT, status)
    assert sandbox_client.messages("sendgrid") == []


def test_a_rate_limit_is_transient_with_the_wait_sendgrid_asks_for(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    sandbox_client.add_fault("sendgrid", 429, retry_after=7, times=1)

    result = sendgrid.send(email())

    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "rate_limited")
    assert result.retry_after is not None and 5 <= result.retry_after <= 7


def test_a_wrong_api_key_is_permanent(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    provider = SendGridProvider.from_config(sandbox_config_for(sandbox, "sendgrid", api_key="SG.wrong"))

    result = provider.send(email())

    assert (result.outcome, result.code, result.status_code) == (Outcome.PERMANENT, "auth_failed", 401)


def test_a_lost_answer_is_transient_and_the_retry_reuses_the_idempotency_key(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    sandbox_client.add_fault("sendgrid", timeout=3, times=1)
    provider = SendGridProvider.from_config(sandbox_config_for(sandbox, "sendgrid", timeout=0.5))

    started = time.monotonic()
    first = provider.send(email())
    second = provider.send(email())

    assert (first.outcome, first.code) == (Outcome.TRANSIENT, "timeout")
    assert time.monotonic() - started < 2.5
    assert second.outcome is Outcome.ACCEPTED
    # SendGrid recorded both: the key lets a receiver (and the Event Webhook) tell it was one delivery.
    assert sandbox_client.count("sendgrid", "delivery-1") == 2


def test_a_string_that_is_no_address_is_refused_before_sendgrid_sees_it(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    result = sendgrid.send(email("not-an-address"))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "invalid_address")
    assert sandbox_client.requests("sendgrid") == []
