"""SendGrid into the sandbox: one send, batches of personalizations (per-recipient content as
substitutions), tracking, faults, one keep-alive connection."""

from __future__ import annotations

import time

from django.conf import settings
from urllib3.connection import HTTPConnection

from apps.notifications.rendering import render_fields
from apps.providers import tracking
from apps.providers.adapters.sendgrid import SendGridProvider
from apps.providers.base import Channel, Outcome
from apps.providers.email import compose
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


def test_different_bodies_in_one_batch_go_in_separate_requests_and_subjects_per_recipient(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    results = sendgrid.send_batch(
        [
            email("a@example.com", "d-1"),
            email("b@example.com", "d-2", text="Other"),
            email("c@example.com", "d-3", subject="Your parcel shipped"),
        ]
    )

    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert [r["recipients"] for r in sandbox_client.requests("sendgrid")] == [
        ["a@example.com", "c@example.com"],
        ["b@example.com"],
    ]
    assert {m["recipient"]: (m["subject"], m["text"]) for m in sandbox_client.messages("sendgrid")} == {
        "a@example.com": ("Your order shipped", "It is on its way."),
        "b@example.com": ("Your order shipped", "Other"),
        "c@example.com": ("Your parcel shipped", "It is on its way."),
    }


def test_a_tracked_batch_carries_each_recipients_urls_as_substitutions(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    sendgrid.send_batch([email(f"u{i}@example.com", f"d-{i}", html=HTML, track_clicks=True) for i in range(3)])

    [request] = sandbox_client.requests("sendgrid")
    messages = {m["idempotency_key"]: m for m in sandbox_client.messages("sendgrid")}
    # One shared body; SendGrid (and the sandbox) put each recipient's own signed link in place.
    assert request["status"] == 202
    for i in range(3):
        html = messages[f"d-{i}"]["html"]
        assert "-sbx-" not in html
        assert tracking.click_url(f"d-{i}", "https://shop.test/orders/7?a=1&b=2") in html


PERSONAL = {
    "subject": "Hi {{ recipient.name }}, order {{ order }} shipped",
    "text": "Hello {{ recipient.name }},\n\norder {{ order }} is on its way to {{ recipient.data.city }}.",
    "html": "<p>Hello <b>{{ recipient.name }}</b>,</p><p>order {{ order }} is on its way.</p>",
}
NAMES = ["Ada", "Bob & <Carol>", "Dana -sbx-h0- Evans", "Émile"]


def personal(i: int, name: str, city: str = "", **fields):
    context = {"order": "A-7", "recipient": {"name": name, "data": {"city": city or f"City {i}"}}}
    rendered = render_fields("email", PERSONAL, context)
    return email(f"u{i}@example.com", f"d-{i}", recipient_id=str(100 + i), **rendered, **fields)


def test_per_recipient_content_shares_one_request_and_each_recipient_sees_their_own(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    # Given emails rendered per recipient (one name that would collide with a token, sent alone)
    messages = [personal(i, name, list_unsubscribe=True, category="orders") for i, name in enumerate(NAMES)]

    # When they are sent as a batch
    results = sendgrid.send_batch(messages)

    # Then the three that can share a body go in one request, the colliding one in its own
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 4
    assert sendgrid.plan_requests(messages) == [[0, 1, 3], [2]]
    assert [len(r["recipients"]) for r in sandbox_client.requests("sendgrid")] == [3, 1]
    # And each recipient received exactly their own rendering, as a message of its own would be
    received = {m["idempotency_key"]: m for m in sandbox_client.messages("sendgrid")}
    for i, sent in enumerate(messages):
        own = compose(sent)
        got = received[f"d-{i}"]
        assert (got["subject"], got["text"], got["html"]) == (own.subject, own.text, own.html)
        assert f"Hello {NAMES[i]}," in got["text"] and f"City {i}" in got["text"]
        assert "-sbx-" not in got["text"] or i == 2
    assert "<b>Bob &amp; &lt;Carol&gt;</b>" in received["d-1"]["html"]


def test_substitutions_over_sendgrids_limit_send_that_message_alone(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    messages = [personal(0, "Ada"), personal(1, "Bo", city="C" * 10_000), personal(2, "Cy")]

    results = sendgrid.send_batch(messages)

    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3
    assert sendgrid.plan_requests(messages) == [[0, 2], [1]]
    received = {m["idempotency_key"]: m for m in sandbox_client.messages("sendgrid")}
    assert received["d-1"]["text"] == compose(messages[1]).text


def test_a_server_error_on_a_batch_is_transient_for_each_of_its_messages(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient
):
    sandbox_client.add_fault("sendgrid", 503, times=1)

    results = sendgrid.send_batch([personal(i, name) for i, name in enumerate(["Ada", "Bob", "Cy"])])

    assert [(r.outcome, r.status_code) for r in results] == [(Outcome.TRANSIENT, 503)] * 3
    assert not any(r.ambiguous for r in results)
    assert sandbox_client.messages("sendgrid") == []


def test_a_refused_batch_is_permanent_for_each_of_its_messages(sandbox: SandboxProcess, sandbox_client: SandboxClient):
    provider = SendGridProvider.from_config(sandbox_config_for(sandbox, "sendgrid", api_key="SG.wrong"))

    results = provider.send_batch([personal(i, name) for i, name in enumerate(["Ada", "Bob"])])

    assert [(r.outcome, r.code) for r in results] == [(Outcome.PERMANENT, "auth_failed")] * 2


def test_requests_of_one_worker_share_one_keep_alive_connection(
    sendgrid: SendGridProvider, sandbox_client: SandboxClient, monkeypatch
):
    opened: list[object] = []
    new_conn = HTTPConnection._new_conn

    def counting(self):
        opened.append(self.host)
        return new_conn(self)

    monkeypatch.setattr(HTTPConnection, "_new_conn", counting)
    for i in range(3):
        assert sendgrid.send(email(f"u{i}@example.com", f"d-{i}")).accepted

    assert len(opened) <= 1  # one new connection at most (none if an earlier test left one open)
    assert len(sandbox_client.messages("sendgrid")) == 3


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
