"""Fault rules (errors, Retry-After, delays, hangs) and counting per idempotency key."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from sandbox.config import DEFAULT_SENDGRID_API_KEY, DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN
from sandbox.testing import SandboxClient, SandboxError, SandboxProcess


def sendgrid_post(sandbox: SandboxProcess, key: str = "k-1", *, timeout: float = 5) -> requests.Response:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "ada@example.com"}], "custom_args": {"idempotency_key": key}}],
        "from": {"email": "noreply@signalbox.test"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "x"}],
    }
    return requests.post(
        f"{sandbox.http_url}/v3/mail/send",
        json=body,
        headers={"Authorization": f"Bearer {DEFAULT_SENDGRID_API_KEY}"},
        timeout=timeout,
    )


def test_a_500_fault_fails_the_given_number_of_requests(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    sandbox_client.add_fault("sendgrid", 500, times=2)

    statuses = [sendgrid_post(sandbox).status_code for _ in range(3)]

    assert statuses == [500, 500, 202]
    assert sandbox_client.count("sendgrid", "k-1") == 1
    [fault] = sandbox_client.faults()
    assert (fault["hits"], fault["remaining"]) == (2, 0)


def test_a_twilio_429_carries_retry_after_and_twilios_code(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sandbox_client.add_fault("twilio", 429, retry_after=3, times=1)

    response = requests.post(
        f"{sandbox.http_url}/2010-04-01/Accounts/{DEFAULT_TWILIO_ACCOUNT_SID}/Messages.json",
        data={"To": "+14155550100", "From": "+15005550006", "Body": "hi"},
        auth=(DEFAULT_TWILIO_ACCOUNT_SID, DEFAULT_TWILIO_AUTH_TOKEN),
        timeout=5,
    )

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["code"] == 20429


def test_a_delay_slows_the_answer_but_the_message_is_accepted(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sandbox_client.add_fault("sendgrid", delay_ms=300, times=1)

    started = time.monotonic()
    response = sendgrid_post(sandbox)

    assert response.status_code == 202
    assert time.monotonic() - started >= 0.3
    assert len(sandbox_client.messages("sendgrid")) == 1


def test_a_hang_past_the_client_timeout_still_delivers_the_message(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    """The case idempotency keys exist for: the provider sent it, the client never heard back."""
    sandbox_client.add_fault("sendgrid", timeout=2, times=1)

    with pytest.raises(requests.Timeout):
        sendgrid_post(sandbox, "delivery-1", timeout=0.3)
    sendgrid_post(sandbox, "delivery-1")

    assert sandbox_client.count("sendgrid", "delivery-1") == 2
    assert sandbox_client.counts()["duplicates"] == {"sendgrid": {"delivery-1": 2}}


def test_a_hang_with_a_status_fails_without_delivering(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    sandbox_client.add_fault("sendgrid", 503, timeout=0.5, times=1)

    started = time.monotonic()
    response = sendgrid_post(sandbox)

    assert response.status_code == 503
    assert time.monotonic() - started >= 0.5
    assert sandbox_client.messages() == []


def test_counts_group_messages_by_provider_and_idempotency_key(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sendgrid_post(sandbox, "a")
    sendgrid_post(sandbox, "b")
    sendgrid_post(sandbox, "b")

    counts = sandbox_client.counts()

    assert counts["total"] == 3
    assert counts["providers"]["sendgrid"] == {"messages": 3, "requests": 3, "idempotency_keys": {"a": 1, "b": 2}}
    assert counts["duplicates"] == {"sendgrid": {"b": 2}}


def test_a_malformed_fault_is_refused_with_a_code(sandbox_client: SandboxClient) -> None:
    with pytest.raises(SandboxError) as caught:
        sandbox_client.add_fault("carrier-pigeon", 500)

    assert caught.value.status == 400
    assert '"code": "invalid_fault"' in caught.value.body


def test_clearing_faults_restores_normal_answers(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    sandbox_client.add_fault("sendgrid", 500)
    sandbox_client.clear_faults()

    assert sendgrid_post(sandbox).status_code == 202
