"""FCM HTTP v1 through pyfcm into the sandbox: OAuth, a request per device, dead tokens, no inline retries."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from apps.providers.adapters.fcm import FcmProvider
from apps.providers.base import Channel, Outcome
from sandbox.keys import new_service_account
from sandbox.testing import SandboxClient, SandboxProcess
from tests.providers.conftest import message, project_of


def push(tokens: list[str], key: str = "delivery-1", **fields: Any):
    defaults = {"title": "Order shipped", "text": "It is on its way.", "data": {"order": 7, "url": "/orders/7"}}
    return message(Channel.PUSH, tokens, key, **{**defaults, **fields})


def test_every_device_gets_a_notification_with_the_idempotency_key(
    fcm: FcmProvider, sandbox_client: SandboxClient, service_account_file: Path
):
    result = fcm.send(push(["token-phone", "token-tablet"]))

    assert result.outcome is Outcome.ACCEPTED and result.invalid_tokens == ()
    received = sandbox_client.messages("fcm")
    assert [m["recipient"] for m in received] == ["token-phone", "token-tablet"]
    assert received[0]["subject"] == "Order shipped"
    assert received[0]["text"] == "It is on its way."
    # FCM data values are strings.
    assert received[0]["extra"]["data"] == {"order": "7", "url": "/orders/7", "idempotency_key": "delivery-1"}
    assert received[0]["extra"]["project"] == project_of(service_account_file)
    assert result.message_id == received[0]["provider_message_id"]


def test_a_message_without_title_or_text_is_data_only(fcm: FcmProvider, sandbox_client: SandboxClient):
    fcm.send(push(["token-1"], title="", text=""))

    [received] = sandbox_client.messages("fcm")
    assert received["subject"] is None and received["text"] is None
    assert received["extra"]["data"]["order"] == "7"


def test_an_unregistered_device_is_reported_for_deactivation(fcm: FcmProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("fcm", "UNREGISTERED", match="token-old")

    result = fcm.send(push(["token-old", "token-new"]))

    assert result.outcome is Outcome.ACCEPTED
    assert result.invalid_tokens == ("token-old",)
    assert [m["recipient"] for m in sandbox_client.messages("fcm")] == ["token-new"]


def test_when_every_device_is_gone_the_result_is_permanent(fcm: FcmProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("fcm", "UNREGISTERED", match="token-a")
    sandbox_client.add_fault("fcm", "INVALID_ARGUMENT", match="token-b")

    result = fcm.send(push(["token-a", "token-b"]))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "UNREGISTERED")
    assert result.invalid_tokens == ("token-a", "token-b")


def test_a_payload_fcm_refuses_does_not_blame_the_token(fcm: FcmProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("fcm", "SENDER_ID_MISMATCH", match="token-1")

    result = fcm.send(push(["token-1"]))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "SENDER_ID_MISMATCH")
    assert result.invalid_tokens == ()


def test_unavailable_is_transient_and_pyfcm_does_not_retry_on_its_own(fcm: FcmProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("fcm", 503, times=1)

    result = fcm.send(push(["token-1"]))

    assert (result.outcome, result.code) == (Outcome.TRANSIENT, "UNAVAILABLE")
    assert len(sandbox_client.requests("fcm")) == 1


def test_a_quota_error_hands_back_the_wait_instead_of_sleeping(fcm: FcmProvider, sandbox_client: SandboxClient):
    sandbox_client.add_fault("fcm", "QUOTA_EXCEEDED", retry_after=30, times=1)

    started = time.monotonic()
    result = fcm.send(push(["token-1"]))

    assert (result.outcome, result.code, result.retry_after) == (Outcome.TRANSIENT, "QUOTA_EXCEEDED", 30.0)
    assert time.monotonic() - started < 5
    assert len(sandbox_client.requests("fcm")) == 1


def test_an_expired_access_token_is_renewed_once(fcm: FcmProvider, sandbox_client: SandboxClient):
    fcm.send(push(["warm-up"]))  # the client now holds a token
    sandbox_client.reset()
    sandbox_client.add_fault("fcm", "ACCESS_TOKEN_EXPIRED", times=1)

    result = fcm.send(push(["token-1"]))

    assert result.outcome is Outcome.ACCEPTED
    assert [r["status"] for r in sandbox_client.requests("fcm")] == [401, 200]


def test_a_service_account_the_token_endpoint_refuses_is_permanent(
    sandbox: SandboxProcess, tmp_path: Path, fcm_config: dict[str, Any]
):
    # A key the sandbox never registered: its JWT signature cannot be verified.
    info, _ = new_service_account(token_uri=sandbox.token_uri, project_id="unknown-project")
    provider = FcmProvider.from_config({**fcm_config, "service_account_json": json.dumps(info)})

    result = provider.send(push(["token-1"]))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "auth_failed")


def test_a_recipient_without_devices_is_permanent(fcm: FcmProvider):
    result = fcm.send(push([]))

    assert (result.outcome, result.code) == (Outcome.PERMANENT, "no_devices")


def test_health_check_fetches_an_access_token(fcm: FcmProvider):
    assert fcm.check().ok
