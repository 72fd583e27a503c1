"""The sandbox's settings and the fake credentials it accepts.

The defaults are public on purpose: they are what tests and local setups configure the
SDKs with, and they never authorise anything outside this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Copied in project/sandbox_defaults.py (the settings never import the sandbox); a test keeps them equal.
DEFAULT_SENDGRID_API_KEY = "SG.sandbox.signalbox-sandbox-api-key"
DEFAULT_TWILIO_ACCOUNT_SID = "AC5a4db0c5e0a54f0e8d5c3f2b1a0e9d8c"
DEFAULT_TWILIO_AUTH_TOKEN = "sandbox-twilio-auth-token"
DEFAULT_SLACK_BOT_TOKEN = "xoxb-sandbox-bot-token"
DEFAULT_EVENT_KEY_SEED = "signalbox-sandbox"
DEFAULT_FCM_PROJECT_ID = "signalbox-sandbox"

PROVIDERS = ("sendgrid", "twilio", "fcm", "slack", "webhook", "smtp")
CHANNELS = {
    "sendgrid": "email",
    "smtp": "email",
    "twilio": "sms",
    "fcm": "push",
    "slack": "chat",
    "webhook": "webhook",
}


@dataclass
class SandboxConfig:
    host: str = "127.0.0.1"
    http_port: int = 8025
    smtp_port: int = 1025
    data_dir: Path | None = None
    ready_file: Path | None = None
    sendgrid_api_key: str = DEFAULT_SENDGRID_API_KEY
    twilio_account_sid: str = DEFAULT_TWILIO_ACCOUNT_SID
    twilio_auth_token: str = DEFAULT_TWILIO_AUTH_TOKEN
    slack_bot_token: str = DEFAULT_SLACK_BOT_TOKEN
    event_key_seed: str = DEFAULT_EVENT_KEY_SEED
    # How long a `timeout: true` fault hangs: longer than any sane client timeout.
    hang_seconds: float = 60.0

    def public(self) -> dict[str, object]:
        """What `GET /_sandbox/config` shows: everything a client needs to authenticate."""
        return {
            "sendgrid_api_key": self.sendgrid_api_key,
            "twilio_account_sid": self.twilio_account_sid,
            "twilio_auth_token": self.twilio_auth_token,
            "slack_bot_token": self.slack_bot_token,
            "fcm_default_project_id": DEFAULT_FCM_PROJECT_ID,
            "http_port": self.http_port,
            "smtp_port": self.smtp_port,
        }
