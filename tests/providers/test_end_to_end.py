"""From the API to the sandbox: POST /api/v1/notifications -> the real worker -> the provider SDK -> the sandbox.

The tenant's own provider configs point every channel at the sandbox, so any worker serving
the queues (the session's) sends the same way; the environment route (settings read from
environment variables in a fresh process) is checked at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from apps.notifications.models import Delivery, DeliveryAttempt, Device, Recipient
from apps.notifications.services.dispatch import dispatch_due
from apps.notifications.services.preferences import preferences_effective
from sandbox import config as sandbox_config
from sandbox.testing import SandboxClient, SandboxProcess
from tests.conftest import ROOT, wait_for
from tests.providers.conftest import WEBHOOK_SECRET, sandbox_config_for

pytestmark = pytest.mark.worker

CONTENT = {
    "email": {
        "subject": "Order {{ order }} shipped",
        "text": "Order {{ order }} is on its way.",
        "html": "<p>Order <b>{{ order }}</b> is on its way.</p>",
    },
    "sms": {"text": "Order {{ order }} shipped."},
    "push": {"title": "Shipped", "body": "Order {{ order }}", "data": {"order": "{{ order }}"}},
    "chat": {"text": "Order {{ order }} shipped."},
    "webhook": {"body": {"order": "{{ order }}", "status": "shipped"}},
}


def configure(api: Any, name: str, provider: str, options: dict[str, Any], secrets: dict[str, Any], **fields: Any):
    answer = api.post(
        "/api/v1/providers/configs/",
        {"name": name, "provider": provider, "options": options, "secrets": secrets, **fields},
        format="json",
    )
    assert answer.status_code == 201, answer.json()


def split(config: dict[str, Any], *secret_fields: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        {k: v for k, v in config.items() if k not in secret_fields},
        {k: v for k, v in config.items() if k in secret_fields},
    )


@pytest.fixture
def sandboxed_tenant(api: Any, sandbox: SandboxProcess, service_account_file: Path) -> Any:
    """The acme tenant with a provider config per channel, each pointed at the sandbox."""
    configure(api, "sendgrid", "sendgrid", *split(sandbox_config_for(sandbox, "sendgrid"), "api_key"), priority=1)
    configure(api, "relay", "smtp", sandbox_config_for(sandbox, "smtp"), {}, priority=2)
    configure(api, "twilio", "twilio", *split(sandbox_config_for(sandbox, "twilio"), "auth_token"))
    configure(
        api,
        "fcm",
        "fcm",
        {"endpoint": f"{sandbox.http_url}/v1/projects"},
        {"service_account_json": service_account_file.read_text()},
    )
    configure(api, "slack", "slack", *split(sandbox_config_for(sandbox, "slack"), "bot_token"))
    configure(api, "hooks", "webhook", {}, {"signing_secret": WEBHOOK_SECRET})
    return api


def send(api: Any, recipients: list[Any], channels: list[str], **fields: Any) -> str:
    body = {"content": CONTENT, "payload": {"order": "A-7"}, "recipients": recipients, "channels": channels, **fields}
    answer = api.post("/api/v1/notifications/", body, format="json")
    assert answer.status_code == 202, answer.json()
    return str(answer.json()["id"])


def settled(notification_id: str, count: int) -> list[Delivery]:
    deliveries = list(Delivery.objects.filter(notification_id=notification_id).exclude(status__in=Delivery.IN_FLIGHT))
    return deliveries if len(deliveries) == count else []


def test_every_channel_goes_through_its_provider_into_the_sandbox(
    worker: Any, sandboxed_tenant: Any, tenant: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    api = sandboxed_tenant
    sandbox_client.set_webhook_secret("ada", WEBHOOK_SECRET)
    ada = {
        "external_id": "ada",
        "email": "ada@example.com",
        "phone": "+14155550100",
        "chat_address": "#orders",
        "webhook_url": f"{sandbox.http_url}/hooks/ada",
    }
    assert api.post("/api/v1/recipients/", ada, format="json").status_code == 201
    registered = api.post("/api/v1/recipients/ada/devices/", {"platform": "ios", "token": "tok-ada"}, format="json")
    assert registered.status_code == 201, registered.json()

    notification_id = send(api, ["ada"], ["email", "sms", "push", "chat", "webhook"])

    deliveries = {d.channel: d for d in wait_for(lambda: settled(notification_id, 5), timeout=30)}
    assert {c: d.status for c, d in deliveries.items()} == dict.fromkeys(deliveries, "sent")
    by_provider = {m["provider"]: m for m in sandbox_client.messages()}
    assert set(by_provider) == {"sendgrid", "twilio", "fcm", "slack", "webhook"}
    for channel, provider in (("email", "sendgrid"), ("sms", "twilio"), ("push", "fcm"), ("chat", "slack")):
        assert by_provider[provider]["idempotency_key"] == str(deliveries[channel].pk), provider
        assert deliveries[channel].provider == provider
    assert by_provider["sendgrid"]["subject"] == "Order A-7 shipped"
    # The content, then the footer link to the recipient's preference page (its own, substituted).
    assert by_provider["sendgrid"]["html"].startswith("<p>Order <b>A-7</b> is on its way.</p>")
    assert f'<a href="{settings.PUBLIC_URL}/preferences/' in by_provider["sendgrid"]["html"]
    unsubscribe = by_provider["sendgrid"]["headers"]["List-Unsubscribe"]
    assert unsubscribe.startswith(f"<{settings.PUBLIC_URL}/u/")
    assert by_provider["sendgrid"]["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert by_provider["twilio"]["text"] == "Order A-7 shipped."
    callback = f"{settings.PUBLIC_URL}/callbacks/twilio/status?delivery={deliveries['sms'].pk}"
    assert by_provider["twilio"]["extra"]["status_callback"] == callback
    assert by_provider["fcm"]["recipient"] == "tok-ada"
    assert by_provider["slack"]["recipient"] == "#orders"
    assert by_provider["webhook"]["extra"]["json"] == {"order": "A-7", "status": "shipped"}
    assert by_provider["webhook"]["extra"]["signature_valid"] is True
    assert by_provider["webhook"]["headers"]["webhook-id"] == str(deliveries["webhook"].pk)
    assert deliveries["sms"].provider_message_id == by_provider["twilio"]["provider_message_id"]

    # The mailbox's one-click unsubscribe turns this category's email off for ada, and only that.
    answer = Client().post(urlsplit(unsubscribe[1:-1]).path, {"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    recipient = Recipient.objects.get(tenant=tenant, external_id="ada")
    effective = preferences_effective(tenant=tenant, recipient=recipient)
    assert effective["general"]["channels"]["email"] is False
    assert effective["general"]["channels"]["sms"] is True


def test_a_bulk_email_goes_to_sendgrid_in_one_request(
    worker: Any, sandboxed_tenant: Any, sandbox_client: SandboxClient
):
    recipients = [{"external_id": f"u{i}", "email": f"u{i}@example.com"} for i in range(40)]

    notification_id = send(sandboxed_tenant, recipients, ["email"], priority="bulk")

    wait_for(lambda: settled(notification_id, 40), timeout=30)
    assert len(sandbox_client.messages("sendgrid")) == 40
    assert len(sandbox_client.requests("sendgrid")) < 40  # batched, not one call per recipient


def test_a_dead_device_is_deactivated_and_a_transient_email_fails_over_to_smtp(
    worker: Any, sandboxed_tenant: Any, tenant: Any, sandbox_client: SandboxClient
):
    tenant.settings = {**tenant.settings, "retry_policy": {"base_seconds": 0.01}}
    tenant.save(update_fields=["settings"])
    sandbox_client.add_fault("sendgrid", 503, times=1)
    sandbox_client.add_fault("fcm", "UNREGISTERED", match="tok-old")
    api = sandboxed_tenant
    api.post("/api/v1/recipients/", {"external_id": "bob", "email": "bob@example.com"}, format="json")
    api.post("/api/v1/recipients/bob/devices/", {"platform": "android", "token": "tok-old"}, format="json")
    api.post("/api/v1/recipients/bob/devices/", {"platform": "ios", "token": "tok-new"}, format="json")

    notification_id = send(api, ["bob"], ["email", "push"])

    push = wait_for(
        lambda: Delivery.objects.filter(notification_id=notification_id, channel="push", status="sent").first()
    )
    assert [m["recipient"] for m in sandbox_client.messages("fcm")] == ["tok-new"]
    assert not Device.objects.get(token="tok-old").active and Device.objects.get(token="tok-new").active
    email = wait_for(
        lambda: Delivery.objects.filter(notification_id=notification_id, channel="email", status="pending").first()
    )
    assert email.error_code == "http_503"

    def retried() -> Any:
        dispatch_due()
        return Delivery.objects.filter(pk=email.pk, status="sent").first()

    assert wait_for(retried, timeout=30).provider == "smtp"
    assert [a.provider for a in DeliveryAttempt.objects.filter(delivery=email).order_by("number")] == [
        "sendgrid",
        "smtp",
    ]
    assert sandbox_client.messages("smtp")[0]["idempotency_key"] == str(email.pk)
    assert push.provider == "fcm"


def test_a_process_configured_by_environment_variables_sends_into_the_sandbox(
    sandbox: SandboxProcess, sandbox_client: SandboxClient, service_account_file: Path
):
    """The settings block read in a fresh process: what a worker started with these variables does."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SENDGRID_API_KEY": sandbox_config.DEFAULT_SENDGRID_API_KEY,
        "SENDGRID_API_HOST": sandbox.http_url,
        "EMAIL_HOST": sandbox.smtp_host,
        "EMAIL_PORT": str(sandbox.smtp_port),
        "TWILIO_ACCOUNT_SID": sandbox_config.DEFAULT_TWILIO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": sandbox_config.DEFAULT_TWILIO_AUTH_TOKEN,
        "TWILIO_FROM": "+15005550006",
        "TWILIO_API_BASE_URL": sandbox.http_url,
        "FCM_SERVICE_ACCOUNT_FILE": str(service_account_file),
        "FCM_ENDPOINT": f"{sandbox.http_url}/v1/projects",
        "SLACK_BOT_TOKEN": sandbox_config.DEFAULT_SLACK_BOT_TOKEN,
        "SLACK_API_BASE_URL": f"{sandbox.http_url}/slack/api/",
        "SIGNALBOX_WEBHOOK_SIGNING_SECRET": WEBHOOK_SECRET,
    }
    script = """
import json, sys, django
django.setup()
from apps.providers.base import Channel, Message
from apps.providers.registry import environment_chain
to = {"email": "env@example.com", "sms": "+14155550111", "push": ["tok-env"], "chat": "#env", "webhook": sys.argv[1]}
out = {}
for channel, address in to.items():
    chain = environment_chain(channel)
    result = chain[0].send(Message(channel=Channel(channel), to=address, idempotency_key="env-" + channel,
                                   tenant_id="t", subject="Hi", title="Hi", text="From the environment",
                                   data={"hello": "world"}))
    out[channel] = [[p.name for p in chain], result.outcome.value]
print(json.dumps(out))
"""
    command = [sys.executable, "-c", script, f"{sandbox.http_url}/hooks/env"]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "email": [["sendgrid", "smtp"], "accepted"],
        "sms": [["twilio"], "accepted"],
        "push": [["fcm"], "accepted"],
        "chat": [["slack"], "accepted"],
        "webhook": [["webhook"], "accepted"],
    }
    assert {m["provider"]: m["idempotency_key"] for m in sandbox_client.messages()} == {
        "sendgrid": "env-email",
        "twilio": "env-sms",
        "fcm": "env-push",
        "slack": "env-chat",
        "webhook": "env-webhook",
    }
