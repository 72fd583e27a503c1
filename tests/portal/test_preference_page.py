"""The hosted preference page and its signed link, the email footer and unsubscribe pages that lead
to it, per-tenant framing and CORS, and the web components' package."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client

from apps.notifications.models import Category, Preference, Recipient
from apps.notifications.services.preferences import preference_centre
from apps.providers import tracking
from apps.providers.base import Channel, Message
from apps.providers.email import compose
from apps.providers.links import PLACEHOLDER, preferences_link_read, preferences_url
from apps.tenancy import origins

pytestmark = pytest.mark.django_db


@pytest.fixture
def ada(tenant: Any) -> Recipient:
    Category.objects.create(tenant=tenant, key="orders", name="Orders")
    Category.objects.create(tenant=tenant, key="security", name="Security", critical=True)
    return Recipient.objects.create(tenant=tenant, external_id="ada", email="ada@example.com")


def _path(tenant: Any, recipient: Recipient) -> str:
    return preferences_url(tenant_id=str(tenant.pk), recipient_id=recipient.pk).removeprefix(settings.PUBLIC_URL)


def _form(page: str) -> dict[str, str]:
    """What a browser would post: the CSRF token and the boxes ticked (disabled ones are not sent)."""
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    data = {"csrfmiddlewaretoken": token.group(1)}
    for name in re.findall(r'<input type="checkbox" name="([^"]+)"[^>]* checked(?! disabled)[^>]*>', page):
        data[name] = "on"
    return {k: v for k, v in data.items() if not k.startswith("c:security:")}


def test_the_signed_link_opens_a_branded_form_that_saves_with_csrf(tenant, ada):
    tenant.settings = {"branding": {"name": "Acme Shop", "color": "#aa3300", "logo_url": "javascript:alert(1)"}}
    tenant.save()
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(_path(tenant, ada))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Acme Shop" in html and "--sbx-accent: #aa3300" in html and "javascript:" not in html
    assert 'id="c:security:email" aria-label="Security: Email" checked disabled' in html
    assert "script-src 'none'" in page["Content-Security-Policy"]

    form = _form(html)
    form.pop("c:orders:email")
    # Without the CSRF token nothing changes.
    forged = {k: v for k, v in form.items() if k != "csrfmiddlewaretoken"}
    assert browser.post(_path(tenant, ada), forged).status_code == 403
    assert not Preference.objects.filter(recipient=ada).exists()
    saved = browser.post(
        _path(tenant, ada), {**form, "timezone": "Europe/Paris", "quiet_start": "22:00", "quiet_end": "07:00"}
    )
    assert saved.status_code == 302 and saved["Location"].endswith("?saved=1")

    got = Client().get(_path(tenant, ada)).content.decode()
    assert 'id="c:orders:email" aria-label="Orders: Email">' in got  # unticked now
    ada.refresh_from_db()
    assert ada.timezone == "Europe/Paris"


def test_a_bad_time_zone_is_shown_and_nothing_is_saved(tenant, ada):
    browser = Client()
    form = _form(browser.get(_path(tenant, ada)).content.decode())
    refused = browser.post(_path(tenant, ada), {**form, "timezone": "Mars/Olympus"})
    assert refused.status_code == 400 and 'id="errors"' in refused.content.decode()
    ada.refresh_from_db()
    assert ada.timezone == ""


def test_tampered_expired_and_foreign_links_open_nothing(tenant, other_tenant, ada, settings):
    path = _path(tenant, ada)
    assert Client().get(path[:-3] + "xx/").status_code == 404
    other = Recipient.objects.create(tenant=other_tenant, external_id="ada")
    forged = preferences_url(tenant_id=str(tenant.pk), recipient_id=other.pk).removeprefix(settings.PUBLIC_URL)
    assert Client().get(forged).status_code == 404  # a recipient of another tenant
    settings.SIGNALBOX_PREFERENCES_LINK_MAX_AGE_DAYS = -1
    assert Client().get(path).status_code == 410


def test_framing_follows_the_tenants_allowed_origins(tenant, ada):
    closed = Client().get(_path(tenant, ada))
    assert "frame-ancestors 'none'" in closed["Content-Security-Policy"] and closed["X-Frame-Options"] == "DENY"
    tenant.settings = {"inbox": {"allowed_origins": ["https://app.acme.test", "not an origin"]}}
    tenant.save()
    framed = Client().get(_path(tenant, ada))
    assert "frame-ancestors https://app.acme.test;" in framed["Content-Security-Policy"] + ";"
    assert "X-Frame-Options" not in framed


def test_cors_answers_a_tenants_allowed_origin_for_the_recipient_endpoints(tenant):
    tenant.settings = {"inbox": {"allowed_origins": ["https://app.acme.test"]}}
    tenant.save()
    cache.delete(origins.CACHE_KEY)
    preflight: dict[str, Any] = {
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "PUT",
        "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization",
    }
    for path in ("/api/v1/inbox/", "/api/v1/recipients/ada/preferences/"):
        allowed = Client().options(path, HTTP_ORIGIN="https://app.acme.test", **preflight)
        assert allowed["Access-Control-Allow-Origin"] == "https://app.acme.test"
        assert "Access-Control-Allow-Origin" not in Client().options(path, HTTP_ORIGIN="https://evil.test", **preflight)
    # Back-end endpoints stay closed to browsers.
    closed = Client().options("/api/v1/recipients/", HTTP_ORIGIN="https://app.acme.test", **preflight)
    assert "Access-Control-Allow-Origin" not in closed


def _email(**overrides: Any) -> Message:
    return Message(
        channel=Channel.EMAIL,
        to="ada@example.com",
        idempotency_key="d-1",
        tenant_id=overrides.pop("tenant_id"),
        subject="Hi",
        text="Hello.",
        html="<html><body><p>Hello.</p></body></html>",
        **overrides,
    )


def test_every_email_carries_the_signed_preferences_link(tenant, ada):
    email = compose(_email(tenant_id=str(tenant.pk), recipient_id=str(ada.pk)))
    found = re.search(r"(http\S+/preferences/\S+/)", email.text)
    assert found is not None
    url = found.group(1)
    assert preferences_link_read(url.rsplit("/", 2)[-2]).recipient_id == ada.pk
    assert f'href="{url}"' in email.html and email.html.index(url) < email.html.index("</body>")
    # A batch shares one body: the link is a per-recipient substitution.
    batch = compose(_email(tenant_id=str(tenant.pk), recipient_id=str(ada.pk)), placeholders=True)
    assert PLACEHOLDER in batch.text and batch.substitutions[PLACEHOLDER] == url
    # A provider test message (no recipient) has no footer.
    assert "/preferences/" not in compose(_email(tenant_id=str(tenant.pk))).text


def test_one_click_unsubscribe_keeps_working_and_leads_to_the_preference_page(tenant, ada):
    url = tracking.unsubscribe_url(tenant_id=str(tenant.pk), recipient_id=str(ada.pk), category="orders")
    path = url.removeprefix(settings.PUBLIC_URL)
    page = Client().get(path).content.decode()
    assert "/preferences/" in page and "Manage all your notification preferences" in page
    assert Client().post(path).status_code == 200
    assert preference_centre(tenant=tenant, recipient=ada)["effective"]["orders"]["channels"]["email"] is False


def test_the_demo_page_exists_only_when_enabled(tenant, settings):
    settings.DEBUG = False
    settings.SIGNALBOX_INBOX_DEMO = False
    assert Client().get("/inbox/demo/").status_code == 404


def test_the_npm_package_is_the_served_files():
    root = Path(settings.BASE_DIR)
    package = json.loads((root / "clients/web/package.json").read_text())
    for name in ("inbox", "preferences"):
        served = root / "apps/portal/static/signalbox" / f"{name}-{package['version']}.js"
        assert (root / "clients/web" / f"{name}.js").resolve() == served.resolve()
        assert f'const VERSION = "{package["version"]}";' in served.read_text()
