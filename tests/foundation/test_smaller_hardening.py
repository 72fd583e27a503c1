"""Issue 12's smaller guards: rate limits that a forged X-Forwarded-For cannot dodge, API key hashes
kept out of the audit log, inbox tokens that die with their key or on request, and a CRLF in an
email subject treated as the permanent failure it is. (Production settings: test_production_settings.py.)
"""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.core import signing
from django.core.cache import cache
from django.core.mail import BadHeaderError
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from apps.notifications.models import Notification, Recipient
from apps.notifications.rendering import RenderError
from apps.notifications.services.content import NotificationRenderer
from apps.notifications.services.inbox import TOKEN_SALT
from apps.observability.models import AuditEntry
from apps.providers.adapters.smtp import SmtpProvider, from_smtp_error
from apps.providers.base import Channel, Message, Outcome
from apps.tenancy.models import ApiKey, Scope
from apps.tenancy.services import api_key_create, api_key_revoke
from apps.tenancy.throttling import ApiKeyRateThrottle
from sandbox.pytest_plugin import sandbox, sandbox_client  # noqa: F401 (fixtures)
from sandbox.testing import SandboxClient
from tests.conftest import client_for
from tests.providers.conftest import smtp  # noqa: F401 (fixture)

INBOX_COUNT = "/api/v1/inbox/unread-count/"


def _recipient(tenant: Any, external_id: str = "ada") -> Recipient:
    return Recipient.objects.create(tenant=tenant, external_id=external_id, email=f"{external_id}@example.com")


def _token(api: APIClient, external_id: str = "ada") -> str:
    response = api.post(f"/api/v1/recipients/{external_id}/inbox-token/", {}, format="json")
    assert response.status_code == 201, response.json()
    return str(response.json()["token"])


def _browser(token: str, **headers: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Recipient {token}", **headers)
    return client


# --- Rate limits and X-Forwarded-For --------------------------------------------------------------


@pytest.mark.django_db
def test_a_recipient_token_cannot_dodge_its_rate_limit_by_forging_x_forwarded_for(api, tenant, monkeypatch):
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    _recipient(tenant)
    token = _token(api)
    cache.clear()

    answers = [_browser(token).get(INBOX_COUNT, HTTP_X_FORWARDED_FOR=f"203.0.113.{n}").status_code for n in range(4)]

    assert answers == [200, 200, 200, 429]


def _ident(settings: Any, trusted: list[str], remote: str, forwarded: str | None) -> str | None:
    settings.SIGNALBOX_TRUSTED_PROXIES = trusted
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    django_request = APIRequestFactory().get("/api/v1/")
    django_request.META.update(meta)
    request = Request(django_request)
    return ApiKeyRateThrottle().get_cache_key(request, view=None)


def test_x_forwarded_for_is_believed_only_from_trusted_proxies_and_only_their_part(settings):
    forged = "6.6.6.6, 203.0.113.7, 10.0.0.3"
    # No trusted proxies (the default): the header is ignored, whoever connects.
    assert _ident(settings, [], "10.0.0.5", forged) == "throttle:ip:10.0.0.5"
    assert _ident(settings, [], "198.51.100.1", "6.6.6.6") == "throttle:ip:198.51.100.1"
    # From a trusted proxy: the right-most address that is not a trusted proxy; what the client
    # wrote to the left of it (6.6.6.6) is never believed.
    assert _ident(settings, ["10.0.0.0/8"], "10.0.0.5", forged) == "throttle:ip:203.0.113.7"
    assert _ident(settings, ["10.0.0.0/8", "2001:db8::/32"], "2001:db8::1", "[2001:dc8::9]:443, 10.1.2.3") == (
        "throttle:ip:2001:dc8::9"
    )
    assert _ident(settings, ["10.0.0.0/8"], "10.0.0.5", "10.0.0.7, 10.0.0.6") == "throttle:ip:10.0.0.7"  # all proxies
    # A connection from outside the trusted list is the client, whatever it claims.
    assert _ident(settings, ["10.0.0.0/8"], "198.51.100.1", "10.0.0.9") == "throttle:ip:198.51.100.1"
    # Garbage where a proxy would have written an address: the last trusted hop, not the garbage.
    assert _ident(settings, ["10.0.0.0/8"], "10.0.0.5", "6.6.6.6, not-an-ip") == "throttle:ip:10.0.0.5"


# --- The audit log names keys by their prefix ------------------------------------------------------


@pytest.mark.django_db
def test_a_read_key_sees_api_keys_in_the_audit_log_by_prefix_never_by_hash(tenant):
    key, _ = api_key_create(tenant=tenant, name="ci", scopes=[Scope.NOTIFICATIONS_WRITE])
    api_key_revoke(key=key)
    reader = client_for(tenant, scopes=[Scope.READ])

    body = reader.get("/api/v1/audit/", {"target_type": "tenancy.apikey"}).content.decode()
    entries = reader.get("/api/v1/audit/", {"target_type": "tenancy.apikey"}).json()["results"]

    assert "sha512" not in body and key.hashed_key not in body
    assert {e["action"] for e in entries if e["target"]["id"] == key.prefix} >= {"api_key.created", "api_key.revoked"}
    assert not AuditEntry.objects.filter(target_id__contains="$").exists()


@pytest.mark.django_db
def test_audit_entries_written_before_the_fix_are_redacted_on_read_and_by_the_migration(tenant):
    key, _ = api_key_create(tenant=tenant, name="ci")
    legacy = AuditEntry.objects.create(
        tenant=tenant,
        actor_type="api_key",
        actor_id=key.pk,
        action="api_key.revoked",
        target_type="tenancy.apikey",
        target_id=key.pk,
    )
    other = AuditEntry.objects.create(tenant=tenant, action="template.updated", target_id="order_shipped.v2")

    shown = client_for(tenant, scopes=[Scope.READ]).get(f"/api/v1/audit/{legacy.pk}/").json()
    assert shown["target"]["id"] == shown["actor"]["id"] == key.prefix

    import_module("apps.observability.migrations.0003_redact_api_key_ids").redact(django_apps, None)
    legacy.refresh_from_db()
    other.refresh_from_db()
    assert (legacy.actor_id, legacy.target_id) == (key.prefix, key.prefix)
    assert other.target_id == "order_shipped.v2"


# --- Inbox tokens are revocable -----------------------------------------------------------------------


@pytest.mark.django_db
def test_revoking_the_key_that_minted_an_inbox_token_ends_the_token_at_once(tenant):
    _recipient(tenant)
    minting = client_for(tenant)
    other = client_for(tenant)
    token, sibling = _token(minting), _token(other)
    assert _browser(token).get(INBOX_COUNT).status_code == 200

    api_key_revoke(key=ApiKey.objects.get(prefix=minting.api_key.partition(".")[0]))  # type: ignore[attr-defined]

    refused = _browser(token).get(INBOX_COUNT)
    assert refused.status_code == 401 and refused.json()["code"] == "revoked_recipient_token"
    assert _browser(sibling).get(INBOX_COUNT).status_code == 200  # another key's tokens live on


@pytest.mark.django_db
def test_an_expired_minting_key_ends_its_tokens_too(tenant):
    _recipient(tenant)
    minting = client_for(tenant)
    token = _token(minting)
    ApiKey.objects.filter(prefix=minting.api_key.partition(".")[0]).update(  # type: ignore[attr-defined]
        expiry_date=timezone.now() - timedelta(seconds=1)
    )
    assert _browser(token).get(INBOX_COUNT).json()["code"] == "revoked_recipient_token"


@pytest.mark.django_db
def test_a_tenant_revokes_every_inbox_token_of_a_recipient(api, tenant):
    ada, bob = _recipient(tenant, "ada"), _recipient(tenant, "bob")
    old, bobs = _token(api, "ada"), _token(api, "bob")

    response = api.post("/api/v1/recipients/ada/inbox-tokens/revoke/")

    assert response.status_code == 204
    assert _browser(old).get(INBOX_COUNT).json()["code"] == "revoked_recipient_token"
    assert _browser(_token(api, "ada")).get(INBOX_COUNT).status_code == 200  # minted afterwards: fine
    assert _browser(bobs).get(INBOX_COUNT).status_code == 200
    assert AuditEntry.objects.filter(action="recipient.inbox_tokens_revoked", target_id=str(ada.pk)).count() == 1
    assert (
        client_for(tenant, scopes=[Scope.READ]).post("/api/v1/recipients/bob/inbox-tokens/revoke/").status_code == 403
    )
    assert bob.pk  # untouched


@pytest.mark.django_db
def test_a_token_that_names_no_minting_key_is_refused(tenant):
    ada = _recipient(tenant)
    expires = int((timezone.now() + timedelta(hours=1)).timestamp())
    unrevocable = signing.dumps({"t": str(tenant.pk), "r": ada.pk, "x": expires}, salt=TOKEN_SALT)

    response = _browser(unrevocable).get(INBOX_COUNT)

    assert response.status_code == 401 and response.json()["code"] == "invalid_recipient_token"


# --- A CRLF in an email subject is permanent ---------------------------------------------------------


def _email(subject: str) -> Message:
    return Message(
        channel=Channel.EMAIL,
        to="ada@example.com",
        idempotency_key="delivery-crlf",
        tenant_id="tenant-1",
        subject=subject,
        text="It is on its way.",
    )


def test_an_smtp_send_with_a_line_break_in_the_subject_fails_permanently(
    smtp: SmtpProvider,  # noqa: F811
    sandbox_client: SandboxClient,  # noqa: F811
):
    result = smtp.send(_email("Your order\r\nBcc: everyone@example.com"))

    assert result.outcome is Outcome.PERMANENT and result.code == "invalid_message"
    assert sandbox_client.messages("smtp") == []
    assert from_smtp_error(BadHeaderError("Header values can't contain newlines")).outcome is Outcome.PERMANENT
    # The session is not lost: the next message goes out.
    assert smtp.send(_email("Your order shipped")).outcome is Outcome.ACCEPTED


@pytest.mark.django_db
def test_a_subject_with_a_line_break_is_refused_when_rendered_and_when_a_template_is_written(api, tenant):
    notification = Notification(
        tenant=tenant,
        content={"default": {"email": {"subject": "Order {{ order }}", "text": "Shipped."}}},
        payload={"order": "A-7\r\nBcc: everyone@example.com"},
    )
    with pytest.raises(RenderError, match="line break"):
        NotificationRenderer(notification).render(Channel.EMAIL, _recipient(tenant))

    response = api.post(
        "/api/v1/templates/",
        {"key": "crlf", "content": {"default": {"email": {"subject": "Hello\nBcc: x@example.com", "text": "Hi"}}}},
        format="json",
    )
    assert response.status_code == 400
    assert "line breaks" in str(response.json()["fields"])
