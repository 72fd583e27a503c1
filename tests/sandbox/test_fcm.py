"""pyfcm (and google-auth's service-account token flow) against the sandbox's FCM v1 API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from pyfcm import FCMNotification
from pyfcm.errors import FCMNotRegisteredError, InvalidDataError

from sandbox.testing import SandboxClient, SandboxProcess

PROJECT = "signalbox-test"


def fcm_for(sandbox: SandboxProcess, service_account: Path) -> FCMNotification:
    fcm = FCMNotification(service_account_file=str(service_account), project_id=PROJECT)
    fcm.FCM_END_POINT_BASE = f"{sandbox.http_url}/v1/projects"
    return fcm


@pytest.fixture
def service_account(sandbox_client: SandboxClient, tmp_path: Path) -> Path:
    return sandbox_client.write_service_account(tmp_path / "service-account.json", project_id=PROJECT)


def test_notify_gets_a_token_from_the_sandbox_and_sends(
    sandbox: SandboxProcess, sandbox_client: SandboxClient, service_account: Path
) -> None:
    fcm = fcm_for(sandbox, service_account)

    result = fcm.notify(
        fcm_token="device-token-1",
        notification_title="Order shipped",
        notification_body="It is on its way",
        data_payload={"order": "42", "idempotency_key": "delivery-9"},
    )

    assert result["name"].startswith(f"projects/{PROJECT}/messages/")
    assert fcm.credentials.token.startswith("ya29.")
    [message] = sandbox_client.messages("fcm")
    assert message["recipient"] == "device-token-1"
    assert message["subject"] == "Order shipped"
    assert message["text"] == "It is on its way"
    assert message["extra"]["data"] == {"order": "42", "idempotency_key": "delivery-9"}
    assert message["idempotency_key"] == "delivery-9"
    assert message["provider_message_id"] == result["name"]


def test_an_unregistered_token_raises_not_registered(
    sandbox: SandboxProcess, sandbox_client: SandboxClient, service_account: Path
) -> None:
    sandbox_client.add_fault("fcm", "UNREGISTERED", match="stale-token")
    fcm = fcm_for(sandbox, service_account)

    with pytest.raises(FCMNotRegisteredError):
        fcm.notify(fcm_token="stale-token", notification_title="Hi")
    fcm.notify(fcm_token="fresh-token", notification_title="Hi")

    assert [m["recipient"] for m in sandbox_client.messages("fcm")] == ["fresh-token"]


def test_the_unregistered_error_has_googles_shape(
    sandbox: SandboxProcess, sandbox_client: SandboxClient, service_account: Path
) -> None:
    sandbox_client.add_fault("fcm", "UNREGISTERED", match="stale-token")
    fcm = fcm_for(sandbox, service_account)

    response = fcm.send_request(fcm.json_dumps({"message": {"token": "stale-token"}}))

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}],
        }
    }


def test_a_service_account_the_sandbox_does_not_know_gets_no_token(
    sandbox: SandboxProcess, sandbox_client: SandboxClient, tmp_path: Path
) -> None:
    own = sandbox_client.write_service_account(tmp_path / "known.json", project_id=PROJECT)
    info = json.loads(own.read_text())
    info["client_email"] = "stranger@signalbox-test.iam.gserviceaccount.com"
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps(info))

    with pytest.raises(InvalidDataError, match="invalid_grant"):
        fcm_for(sandbox, stranger).notify(fcm_token="t", notification_title="Hi")


def test_a_request_without_a_sandbox_token_is_unauthenticated(sandbox: SandboxProcess) -> None:
    response = requests.post(
        f"{sandbox.http_url}/v1/projects/{PROJECT}/messages:send",
        json={"message": {"token": "t"}},
        headers={"Authorization": "Bearer ya29.made-up"},
        timeout=5,
    )

    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"


def test_non_string_data_values_are_rejected_like_fcm_does(
    sandbox: SandboxProcess, sandbox_client: SandboxClient, service_account: Path
) -> None:
    fcm = fcm_for(sandbox, service_account)
    response = fcm.send_request(fcm.json_dumps({"message": {"token": "t", "data": {"n": 1}}}))

    with pytest.raises(InvalidDataError, match="TYPE_STRING"):
        fcm.parse_response(response)


def test_an_expired_token_makes_pyfcm_fetch_a_new_one_and_retry(
    sandbox: SandboxProcess, sandbox_client: SandboxClient, service_account: Path
) -> None:
    sandbox_client.add_fault("fcm", "ACCESS_TOKEN_EXPIRED", times=1)
    fcm = fcm_for(sandbox, service_account)

    fcm.notify(fcm_token="device-token-1", notification_title="Hi")

    assert [r["status"] for r in sandbox_client.requests("fcm")] == [401, 200]
    assert len(sandbox_client.messages("fcm")) == 1
