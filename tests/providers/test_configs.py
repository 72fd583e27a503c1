"""Per-tenant provider configs: encrypted at rest, masked in the API, validated, ordered into the chain."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from apps.observability.models import AuditEntry
from apps.providers.adapters.sendgrid import SendGridProvider
from apps.providers.adapters.smtp import SmtpProvider
from apps.providers.models import ProviderConfig
from apps.providers.registry import provider_chain
from apps.providers.services import provider_config_create
from apps.tenancy.models import Scope
from sandbox import config as sandbox_config
from sandbox.testing import SandboxClient, SandboxProcess
from tests.conftest import client_for
from tests.providers.conftest import sandbox_config_for

pytestmark = pytest.mark.django_db

API_KEY = "SG.live-looking.key-that-must-never-leak-9f3a"
NO_PROVIDERS: dict[str, list[str]] = {"email": [], "sms": [], "push": [], "chat": [], "webhook": []}


def sendgrid_body(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "sendgrid-main",
        "provider": "sendgrid",
        "priority": 10,
        "options": {"from_email": "Acme <noreply@acme.test>"},
        "secrets": {"api_key": API_KEY},
        **overrides,
    }


def test_a_secret_is_encrypted_at_rest_and_masked_in_every_answer(api):
    created = api.post("/api/v1/providers/configs/", sendgrid_body(), format="json")

    assert created.status_code == 201, created.json()
    assert created.json()["secrets"] == {"api_key": "SG.****9f3a"}
    assert created.json()["channel"] == "email" and created.json()["configured"] is True
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets_encrypted, options::text FROM providers_providerconfig")
        [(stored, options)] = cursor.fetchall()
    assert API_KEY not in stored and "9f3a" not in stored and API_KEY not in options
    assert ProviderConfig.objects.get().secrets() == {"api_key": API_KEY}
    for answer in (
        api.get("/api/v1/providers/configs/"),
        api.get(f"/api/v1/providers/configs/{created.json()['id']}/"),
    ):
        assert API_KEY not in answer.content.decode()


def test_a_change_merges_secrets_and_keeps_the_ones_not_given(api, sandbox: SandboxProcess):
    config_id = api.post("/api/v1/providers/configs/", sendgrid_body(), format="json").json()["id"]

    # A host the guard can resolve here (no network beyond 127.0.0.1), as api.eu.sendgrid.com would be.
    changed = api.patch(
        f"/api/v1/providers/configs/{config_id}/",
        {"priority": 5, "options": {"host": sandbox.http_url}},
        format="json",
    )

    assert changed.status_code == 200, changed.json()
    assert changed.json()["priority"] == 5
    assert changed.json()["options"] == {"from_email": "Acme <noreply@acme.test>", "host": sandbox.http_url}
    assert ProviderConfig.objects.get().secrets() == {"api_key": API_KEY}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (sendgrid_body(provider="pigeon"), "provider"),
        (sendgrid_body(secrets={}), "api_key"),
        (sendgrid_body(options={"from_email": "x@acme.test", "api_key": API_KEY}), "options.api_key"),
        (sendgrid_body(options={"from_email": "x@acme.test", "colour": "blue"}), "options.colour"),
        (sendgrid_body(options={"from_email": "not an address"}), "from_email"),
        (sendgrid_body(options={"from_email": "x@acme.test", "timeout": "soon"}), "options.timeout"),
        ({**sendgrid_body(), "provider": "smtp", "secrets": {},
          "options": {"host": "h", "from_email": "a@b.c", "use_tls": True, "use_ssl": True}}, "use_ssl"),
        ({**sendgrid_body(), "provider": "webhook", "options": {}, "secrets": {"signing_secret": "plain"}},
         "signing_secret"),
        ({**sendgrid_body(), "provider": "fcm", "options": {}, "secrets": {"service_account_json": "{}"}},
         "service_account_json"),
    ],
)  # fmt: skip
def test_an_invalid_config_is_refused_and_nothing_is_stored(api, body, field):
    answer = api.post("/api/v1/providers/configs/", body, format="json")

    assert answer.status_code == 400
    assert field in answer.json()["fields"], answer.json()
    assert not ProviderConfig.objects.exists()


def service_account(token_uri: str) -> str:
    return json.dumps({"type": "service_account", "project_id": "acme", "client_email": "push@acme.test",
                       "private_key": "-----BEGIN PRIVATE KEY-----\n…", "token_uri": token_uri})  # fmt: skip


@pytest.mark.parametrize(
    ("provider", "options", "secrets", "field", "reason"),
    [
        ("sendgrid", {"from_email": "a@acme.test", "host": "https://127.0.0.1:8025"}, {"api_key": API_KEY},
         "host", "loopback"),
        ("sendgrid", {"from_email": "a@acme.test", "host": "http://93.184.216.34"}, {"api_key": API_KEY},
         "host", "https://"),
        ("twilio", {"account_sid": "AC1", "from_number": "+15005550006",
                    "api_base_url": "https://169.254.169.254/latest"}, {"auth_token": "t"},
         "api_base_url", "link-local"),
        ("slack", {"api_base_url": "https://localhost:8025/slack/api/"}, {"bot_token": "xoxb-1"},
         "api_base_url", "loopback"),
        ("fcm", {"endpoint": "https://10.0.0.1/v1/projects"}, {"service_account_json": service_account(
            "https://oauth2.googleapis.com/token")}, "endpoint", "private"),
        ("fcm", {}, {"service_account_json": service_account("https://127.0.0.1:8025/token")},
         "service_account_json", "token_uri"),
        ("smtp", {"host": "127.0.0.1", "port": 6379, "from_email": "a@acme.test"}, {}, "host", "loopback"),
        ("smtp", {"host": "::1", "from_email": "a@acme.test"}, {}, "host", "loopback"),
        ("smtp", {"host": "localhost", "from_email": "a@acme.test"}, {}, "host", "loopback"),
    ],
)  # fmt: skip
@override_settings(SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE=False)
def test_a_config_pointing_at_an_internal_or_plain_http_address_is_refused_and_nothing_is_stored(
    api, provider, options, secrets, field, reason
):
    body = {"name": "internal", "provider": provider, "options": options, "secrets": secrets}

    answer = api.post("/api/v1/providers/configs/", body, format="json")

    assert answer.status_code == 400, answer.json()
    assert answer.json()["code"] == "validation_error"
    assert reason in " ".join(answer.json()["fields"][field]), answer.json()
    assert not ProviderConfig.objects.exists()


def test_a_change_to_an_internal_host_is_refused_and_the_config_is_unchanged(api, settings, sandbox: SandboxProcess):
    created = api.post("/api/v1/providers/configs/", {"name": "relay", "provider": "smtp",
                       "options": sandbox_config_for(sandbox, "smtp")}, format="json")  # fmt: skip
    assert created.status_code == 201, created.json()
    settings.SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE = False

    answer = api.patch(f"/api/v1/providers/configs/{created.json()['id']}/", {"options": {"port": 6379}}, format="json")

    assert answer.status_code == 400 and "host" in answer.json()["fields"], answer.json()
    assert ProviderConfig.objects.get().options["port"] == sandbox.smtp_port


def test_a_name_is_unique_per_tenant(api, other_api):
    api.post("/api/v1/providers/configs/", sendgrid_body(), format="json")

    again = api.post("/api/v1/providers/configs/", sendgrid_body(), format="json")
    elsewhere = other_api.post("/api/v1/providers/configs/", sendgrid_body(), format="json")

    assert again.status_code == 409 and again.json()["code"] == "provider_config_exists"
    assert elsewhere.status_code == 201


def test_another_tenants_config_is_not_found(api, other_api):
    config_id = api.post("/api/v1/providers/configs/", sendgrid_body(), format="json").json()["id"]

    assert other_api.get(f"/api/v1/providers/configs/{config_id}/").status_code == 404
    assert other_api.delete(f"/api/v1/providers/configs/{config_id}/").status_code == 404
    assert other_api.post(f"/api/v1/providers/{config_id}/test/", {"to": "a@b.c"}, format="json").status_code == 404


def test_configs_need_the_admin_scope(tenant):
    reader = client_for(tenant, [Scope.READ])
    sender = client_for(tenant, [Scope.NOTIFICATIONS_WRITE])

    assert reader.get("/api/v1/providers/configs/").status_code == 403
    assert sender.post("/api/v1/providers/configs/", sendgrid_body(), format="json").status_code == 403
    assert reader.get("/api/v1/providers/").status_code == 200


def test_deleting_a_config_is_audited_without_secrets(api):
    config_id = api.post("/api/v1/providers/configs/", sendgrid_body(), format="json").json()["id"]
    assert api.delete(f"/api/v1/providers/configs/{config_id}/").status_code == 204

    actions = list(
        AuditEntry.objects.filter(action__startswith="provider").order_by("id").values_list("action", "data")
    )
    assert [a for a, _ in actions] == ["provider_config.created", "provider_config.deleted"]
    assert API_KEY not in str(actions)


# --- The chain ---------------------------------------------------------------------------------


@override_settings(SIGNALBOX_PROVIDER_CHAINS=NO_PROVIDERS)
def test_the_chain_is_the_tenants_enabled_configs_by_priority(tenant, other_tenant, sandbox: SandboxProcess):
    provider_config_create(tenant=tenant, name="relay", provider="smtp", priority=20,
                           options=sandbox_config_for(sandbox, "smtp"))  # fmt: skip
    provider_config_create(tenant=tenant, name="sg", provider="sendgrid", priority=10,
                           options={"from_email": "a@acme.test"}, secrets={"api_key": API_KEY})  # fmt: skip
    provider_config_create(tenant=tenant, name="sg-off", provider="sendgrid", priority=1, enabled=False,
                           options={"from_email": "a@acme.test"}, secrets={"api_key": API_KEY})  # fmt: skip

    chain = provider_chain(tenant=tenant, channel="email")

    assert [type(p) for p in chain] == [SendGridProvider, SmtpProvider]
    assert chain[0].api_key == API_KEY  # type: ignore[attr-defined]
    assert provider_chain(tenant=tenant, channel="sms") == []
    assert provider_chain(tenant=other_tenant, channel="email") == []


def test_a_tenant_without_configs_uses_the_environment_chain(tenant, sandbox: SandboxProcess):
    env = {
        "SIGNALBOX_PROVIDER_CHAINS": {**NO_PROVIDERS, "email": ["sendgrid", "smtp"]},
        "SENDGRID_API_KEY": sandbox_config.DEFAULT_SENDGRID_API_KEY,
        "SENDGRID_API_HOST": sandbox.http_url,
        "EMAIL_HOST": sandbox.smtp_host,
        "EMAIL_PORT": sandbox.smtp_port,
    }
    with override_settings(**env):
        chain = provider_chain(tenant=tenant, channel="email")

    assert [p.name for p in chain] == ["sendgrid", "smtp"]
    assert chain[0].host == sandbox.http_url  # type: ignore[attr-defined]


@override_settings(SIGNALBOX_PROVIDER_CHAINS={**NO_PROVIDERS, "email": ["smtp"]}, EMAIL_HOST="mail.platform.test")
def test_an_undecryptable_config_is_skipped_for_the_environment(tenant):
    config = provider_config_create(tenant=tenant, name="sg", provider="sendgrid",
                                    options={"from_email": "a@acme.test"}, secrets={"api_key": API_KEY})  # fmt: skip
    ProviderConfig.objects.filter(pk=config.pk).update(secrets_encrypted="gAAAAA-made-with-another-key")

    assert [p.name for p in provider_chain(tenant=tenant, channel="email")] == ["smtp"]


# --- Overview and test sends ---------------------------------------------------------------------


@override_settings(SIGNALBOX_PROVIDER_CHAINS=NO_PROVIDERS)
def test_the_overview_shows_configured_healthy_providers_and_their_place(api, sandbox: SandboxProcess):
    api.post("/api/v1/providers/configs/", {"name": "relay", "provider": "smtp", "priority": 1,
             "options": sandbox_config_for(sandbox, "smtp")}, format="json")  # fmt: skip
    api.post("/api/v1/providers/configs/", {"name": "broken", "provider": "smtp", "priority": 2, "enabled": False,
             "options": {"host": "127.0.0.1", "port": 9, "from_email": "a@b.c"}}, format="json")  # fmt: skip

    answer = api.get("/api/v1/providers/")

    assert answer.status_code == 200
    by_name = {s["name"]: s for s in answer.json()}
    assert by_name["relay"]["healthy"] is True and by_name["relay"]["position"] == 0
    assert by_name["relay"]["detail"].startswith("NOOP 250")
    assert by_name["broken"]["enabled"] is False and by_name["broken"]["position"] is None


def test_a_test_send_goes_through_the_tenants_config_and_answers_its_result(
    api, sandbox: SandboxProcess, sandbox_client: SandboxClient
):
    options = sandbox_config_for(sandbox, "twilio")
    secrets = {"auth_token": options.pop("auth_token")}
    body = {"name": "sms", "provider": "twilio", "options": options, "secrets": secrets}
    assert api.post("/api/v1/providers/configs/", body, format="json").status_code == 201

    answer = api.post("/api/v1/providers/sms/test/", {"to": "+14155550100"}, format="json")

    assert answer.status_code == 200, answer.json()
    assert answer.json()["outcome"] == "accepted" and answer.json()["message_id"].startswith("SM")
    assert sandbox_client.messages("twilio")[0]["recipient"] == "+14155550100"


def test_a_test_send_reports_a_provider_refusal(api, sandbox: SandboxProcess, sandbox_client: SandboxClient):
    sandbox_client.add_fault("smtp", 550, match="gone@example.com")
    api.post("/api/v1/providers/configs/", {"name": "relay", "provider": "smtp",
             "options": sandbox_config_for(sandbox, "smtp")}, format="json")  # fmt: skip

    answer = api.post("/api/v1/providers/relay/test/", {"to": "gone@example.com"}, format="json")

    assert answer.json()["outcome"] == "permanent" and answer.json()["code"] == "550"


def test_a_test_send_needs_a_known_provider(api):
    answer = api.post("/api/v1/providers/pigeon/test/", {"to": "a@b.c"}, format="json")

    assert answer.status_code == 404
