"""Chat recipients without a `chat_address`: the chain's default destination serves them.

Through the real pipeline (fan-out, then `deliveries_send`) to the sandbox: Slack's
`SLACK_DEFAULT_CHANNEL` (the environment's chain), a Teams config's webhook URL (a tenant's own
chain), and no default at all (suppressed `no_address`, nothing posted).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from apps.notifications.models import Delivery, Notification, Recipient
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.notifications import notification_create
from apps.notifications.services.sending import deliveries_send
from apps.providers.services import provider_config_create
from sandbox import config as sandbox_config
from sandbox.testing import SandboxClient, SandboxProcess

pytestmark = pytest.mark.django_db

CONTENT = {"chat": {"text": "Deploy {{ version }} finished."}}
PEOPLE = [{"external_id": "ada", "chat_address": "#deploys"}, {"external_id": "bob"}]


def env_slack(sandbox: SandboxProcess, default_channel: str) -> Any:
    """The environment's chat chain: Slack with a bot token, pointed at the sandbox."""
    return override_settings(
        SLACK_BOT_TOKEN=sandbox_config.DEFAULT_SLACK_BOT_TOKEN,
        SLACK_WEBHOOK_URL="",
        SLACK_API_BASE_URL=f"{sandbox.http_url}/slack/api/",
        SLACK_DEFAULT_CHANNEL=default_channel,
        SIGNALBOX_PROVIDER_CHAINS={"email": [], "sms": [], "push": [], "chat": ["slack"], "webhook": []},
    )


def fan_out(tenant: Any, recipients: list[Any]) -> Notification:
    notification = notification_create(
        tenant=tenant, content=CONTENT, payload={"version": "1.4"}, recipients=recipients, channels=["chat"]
    )
    for chunk_id in notification_fan_out(notification_id=notification.pk):
        fanout_chunk_run(chunk_id=chunk_id)
    return notification


def send_queued(notification: Notification) -> dict[str, Delivery]:
    queued = Delivery.objects.filter(notification=notification, status="queued").values_list("pk", flat=True)
    deliveries_send(delivery_ids=list(queued))
    return {
        d.recipient.external_id: d
        for d in Delivery.objects.filter(notification=notification).select_related("recipient")
    }


def test_a_recipient_without_a_chat_address_gets_the_slack_default_channel(
    tenant: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    with env_slack(sandbox, default_channel="#alerts"):
        deliveries = send_queued(fan_out(tenant, PEOPLE))

    assert {who: d.status for who, d in deliveries.items()} == {"ada": "sent", "bob": "sent"}
    received = {m["idempotency_key"]: m for m in sandbox_client.messages("slack")}
    assert received[str(deliveries["bob"].pk)]["recipient"] == "#alerts"
    assert received[str(deliveries["bob"].pk)]["text"] == "Deploy 1.4 finished."
    assert received[str(deliveries["ada"].pk)]["recipient"] == "#deploys"
    assert deliveries["bob"].provider == "slack"


def test_without_a_default_channel_a_recipient_without_a_chat_address_is_suppressed(
    tenant: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    with env_slack(sandbox, default_channel=""):
        deliveries = send_queued(fan_out(tenant, PEOPLE))

    assert (deliveries["bob"].status, deliveries["bob"].suppression_reason) == ("suppressed", "no_address")
    assert deliveries["ada"].status == "sent"
    assert [m["recipient"] for m in sandbox_client.messages("slack")] == ["#deploys"]


def test_a_tenant_teams_config_with_a_webhook_url_serves_recipients_without_an_address(
    tenant: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    provider_config_create(
        tenant=tenant, name="teams", provider="teams", secrets={"webhook_url": f"{sandbox.http_url}/hooks/teams"}
    )

    deliveries = send_queued(fan_out(tenant, [{"external_id": "bob"}]))

    assert deliveries["bob"].status == "sent" and deliveries["bob"].provider == "teams"
    [received] = sandbox_client.messages("webhook")
    assert received["recipient"] == "teams"
    assert received["extra"]["json"] == {"text": "Deploy 1.4 finished."}


@pytest.mark.parametrize(
    ("default_channel", "outcome"), [("#alerts", ("sent", "")), ("", ("suppressed", "no_address"))]
)
def test_an_address_removed_after_fan_out_is_decided_again_at_send_time(
    tenant: Any, sandbox: SandboxProcess, sandbox_client: SandboxClient, default_channel: str, outcome: tuple[str, str]
):
    with env_slack(sandbox, default_channel=default_channel):
        notification = fan_out(tenant, [{"external_id": "ada", "chat_address": "#deploys"}])
        Recipient.objects.filter(tenant=tenant, external_id="ada").update(chat_address="")

        ada = send_queued(notification)["ada"]

    assert (ada.status, ada.suppression_reason) == outcome
    assert [m["recipient"] for m in sandbox_client.messages("slack")] == ([default_channel] if default_channel else [])


def test_the_chain_is_asked_once_per_chunk_not_per_recipient(tenant: Any, sandbox: SandboxProcess):
    provider_config_create(
        tenant=tenant, name="teams", provider="teams", secrets={"webhook_url": f"{sandbox.http_url}/hooks/teams"}
    )
    counts = {}
    for n in (2, 40):
        notification = notification_create(
            tenant=tenant,
            content=CONTENT,
            payload={"version": "1.4"},
            recipients=[{"external_id": f"n{n}-{i}"} for i in range(n)],
            channels=["chat"],
        )
        [chunk_id] = notification_fan_out(notification_id=notification.pk)
        with CaptureQueriesContext(connection) as ctx:
            fanout_chunk_run(chunk_id=chunk_id)
        counts[n] = sum("providers_providerconfig" in q["sql"] for q in ctx.captured_queries)
        assert set(Delivery.objects.filter(notification=notification).values_list("status", flat=True)) == {"queued"}

    assert counts == {2: 1, 40: 1}
