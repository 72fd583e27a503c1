"""Adapters pointed at the provider sandbox by configuration only, as production points them at the real APIs.

The sandbox fixtures come from `sandbox.pytest_plugin`: `sandbox` (one subprocess per session)
and `sandbox_client` (state reset before each test). They are imported rather than named in
`pytest_plugins`, which pytest allows only in the top-level conftest (as tests/sandbox does).
The factories below build each adapter from the same config dict a tenant's ProviderConfig row
or the environment would give it; `count_smtp_connections` counts the SMTP connections opened.
"""

from __future__ import annotations

import json
import smtplib
from pathlib import Path
from typing import Any

import pytest

from apps.providers.adapters.fcm import FcmProvider
from apps.providers.adapters.sendgrid import SendGridProvider
from apps.providers.adapters.slack import SlackProvider
from apps.providers.adapters.smtp import SmtpProvider
from apps.providers.adapters.twilio import TwilioProvider
from apps.providers.adapters.webhook import WebhookProvider
from apps.providers.base import Channel, Message
from sandbox import config as sandbox_config
from sandbox.pytest_plugin import sandbox, sandbox_client
from sandbox.testing import SandboxProcess

__all__ = ["sandbox", "sandbox_client"]

WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FROM_EMAIL = "Acme <noreply@acme.test>"


def message(channel: Channel, to: Any, key: str = "delivery-1", **fields: Any) -> Message:
    return Message(channel=channel, to=to, idempotency_key=key, tenant_id="tenant-1", **fields)


def count_smtp_connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every SMTP connection this process opens from now on, as (host, port): smtplib's `connect`, counted."""
    opened: list[tuple[str, int]] = []
    connect = smtplib.SMTP.connect

    def counting(self: smtplib.SMTP, host: str = "localhost", port: int = 0, *args: Any, **kwargs: Any) -> Any:
        opened.append((host, port))
        return connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(smtplib.SMTP, "connect", counting)
    return opened


def sandbox_config_for(sandbox: SandboxProcess, provider: str, **overrides: Any) -> dict[str, Any]:
    """The config dict of one provider, pointed at this sandbox."""
    configs: dict[str, dict[str, Any]] = {
        "smtp": {"host": sandbox.smtp_host, "port": sandbox.smtp_port, "from_email": FROM_EMAIL, "timeout": 5},
        "sendgrid": {
            "api_key": sandbox_config.DEFAULT_SENDGRID_API_KEY,
            "host": sandbox.http_url,
            "from_email": FROM_EMAIL,
            "timeout": 5,
        },
        "twilio": {
            "account_sid": sandbox_config.DEFAULT_TWILIO_ACCOUNT_SID,
            "auth_token": sandbox_config.DEFAULT_TWILIO_AUTH_TOKEN,
            "from_number": "+15005550006",
            "api_base_url": sandbox.http_url,
            "timeout": 5,
        },
        "slack": {
            "bot_token": sandbox_config.DEFAULT_SLACK_BOT_TOKEN,
            "api_base_url": f"{sandbox.http_url}/slack/api/",
            "timeout": 5,
        },
        "webhook": {"signing_secret": WEBHOOK_SECRET, "timeout": 5},
    }
    return {**configs[provider], **overrides}


@pytest.fixture
def smtp(sandbox: SandboxProcess) -> SmtpProvider:
    return SmtpProvider.from_config(sandbox_config_for(sandbox, "smtp"))


@pytest.fixture
def sendgrid(sandbox: SandboxProcess) -> SendGridProvider:
    return SendGridProvider.from_config(sandbox_config_for(sandbox, "sendgrid"))


@pytest.fixture
def twilio(sandbox: SandboxProcess) -> TwilioProvider:
    return TwilioProvider.from_config(sandbox_config_for(sandbox, "twilio"))


@pytest.fixture
def slack(sandbox: SandboxProcess) -> SlackProvider:
    return SlackProvider.from_config(sandbox_config_for(sandbox, "slack"))


@pytest.fixture
def webhook() -> WebhookProvider:
    return WebhookProvider.from_config({"signing_secret": WEBHOOK_SECRET, "timeout": 5})


@pytest.fixture(scope="session")
def service_account_file(sandbox: SandboxProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service-account key whose token_uri is the sandbox, trusted by it (kept across resets)."""
    return sandbox.client.write_service_account(tmp_path_factory.mktemp("fcm") / "service-account.json")


@pytest.fixture
def fcm_config(sandbox: SandboxProcess, service_account_file: Path) -> dict[str, Any]:
    return {
        "service_account_json": service_account_file.read_text(),
        "endpoint": f"{sandbox.http_url}/v1/projects",
        "timeout": 5,
    }


@pytest.fixture
def fcm(fcm_config: dict[str, Any]) -> FcmProvider:
    return FcmProvider.from_config(fcm_config)


def project_of(path: Path) -> str:
    return str(json.loads(path.read_text())["project_id"])
