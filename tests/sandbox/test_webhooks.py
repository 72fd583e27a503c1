"""The generic webhook receiver, with Standard Webhooks signatures made by the real library."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import requests
from standardwebhooks.webhooks import Webhook

from sandbox.testing import SandboxClient, SandboxProcess

SECRET = "whsec_" + base64.b64encode(b"signalbox-test-secret-0123456789").decode()


def signed_post(sandbox: SandboxProcess, name: str, body: dict[str, object], secret: str) -> requests.Response:
    payload = json.dumps(body)
    msg_id = "msg_2b3c4d"
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, payload),
        "Content-Type": "application/json",
    }
    return requests.post(f"{sandbox.http_url}/hooks/{name}", data=payload, headers=headers, timeout=5)


def test_a_valid_signature_is_recorded_as_valid(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    sandbox_client.set_webhook_secret("orders", SECRET)

    response = signed_post(sandbox, "orders", {"type": "order.paid", "id": 7}, SECRET)

    assert response.status_code == 200
    [message] = sandbox_client.messages("webhook")
    assert message["recipient"] == "orders"
    assert message["extra"]["signature_valid"] is True
    assert message["extra"]["json"] == {"type": "order.paid", "id": 7}
    assert message["headers"]["webhook-id"] == "msg_2b3c4d"
    assert message["idempotency_key"] == "msg_2b3c4d"


def test_a_signature_made_with_another_secret_is_recorded_as_invalid(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    sandbox_client.set_webhook_secret("orders", SECRET)
    other = "whsec_" + base64.b64encode(b"some-other-secret-abcdefghijklmn").decode()

    response = signed_post(sandbox, "orders", {"type": "order.paid"}, other)

    assert response.status_code == 401
    [message] = sandbox_client.messages("webhook")
    assert message["extra"]["signature_valid"] is False
    assert message["extra"]["signature_error"] == "No matching signature found"


def test_without_a_secret_any_post_is_recorded_raw(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    response = requests.post(
        f"{sandbox.http_url}/hooks/anything", data=b"plain text", headers={"X-Custom": "1"}, timeout=5
    )

    assert response.status_code == 200
    [message] = sandbox_client.messages("webhook")
    assert message["text"] == "plain text"
    assert message["headers"]["X-Custom"] == "1"
    assert message["extra"]["signature_valid"] is None
