"""The in-app inbox: a recipient token opens one recipient's items and nothing else; the tenant key
can act for a named recipient; read/unread/seen/archive state and cursor pagination."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import signing
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from apps.notifications.models import Delivery
from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.inbox import TOKEN_SALT
from apps.notifications.services.notifications import notification_create

pytestmark = pytest.mark.django_db

INBOX = "/api/v1/inbox/"


@pytest.fixture
def inbox(tenant, make_template, make_recipients):
    """Three in-app notifications for user-0 and one for user-1."""
    make_template(default_channels=["in_app"])
    make_recipients(2)
    for i, audience in enumerate([["user-0"], ["user-0"], ["user-0", "user-1"]]):
        notification = notification_create(
            tenant=tenant, template="order_shipped", payload={"order_id": f"N{i}"}, recipients=audience
        )
        for chunk_id in notification_fan_out(notification_id=notification.pk):
            fanout_chunk_run(chunk_id=chunk_id)
    return tenant


def _token(api, external_id, **body):
    response = api.post(f"/api/v1/recipients/{external_id}/inbox-token/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _browser(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Recipient {token}")
    return client


def test_a_recipient_token_lists_only_that_recipients_inbox(api, inbox):
    minted = _token(api, "user-0")
    assert minted["recipient"] == "user-0"
    browser = _browser(minted["token"])
    page = browser.get(INBOX).json()
    assert [item["title"] for item in page["results"]] == ["Order N2 shipped", "Order N1 shipped", "Order N0 shipped"]
    assert page["results"][0]["action_url"] == "/orders/N2" and page["results"][0]["read"] is False
    assert browser.get(INBOX, {"recipient": "user-0"}).status_code == 200
    assert browser.get(f"{INBOX}unread-count/").json() == {"unread": 3, "unseen": 3}
    # The token opens nothing else.
    assert browser.get("/api/v1/notifications/").status_code in (401, 403)
    assert browser.get("/api/v1/recipients/user-0/").status_code in (401, 403)


def test_a_token_for_one_recipient_is_refused_for_anothers_items(api, inbox):
    browser = _browser(_token(api, "user-0")["token"])
    theirs = Delivery.objects.get(recipient__external_id="user-1", channel="in_app")
    assert browser.get(f"{INBOX}{theirs.pk}/").status_code == 404
    assert browser.post(f"{INBOX}{theirs.pk}/read/").status_code == 404
    refused = browser.get(INBOX, {"recipient": "user-1"})
    assert refused.status_code == 403 and refused.json()["code"] == "recipient_mismatch"
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_expired_forged_and_foreign_tenant_tokens_are_refused(api, other_api, inbox, other_tenant, make_recipients):
    expired = signing.dumps(
        {"t": str(inbox.pk), "r": 1, "x": int((timezone.now() - timedelta(seconds=1)).timestamp())}, salt=TOKEN_SALT
    )
    response = _browser(expired).get(INBOX)
    assert response.status_code == 401 and response.json()["code"] == "invalid_recipient_token"
    assert _browser("made-up").get(INBOX).status_code == 401
    token = _token(api, "user-0")["token"]
    assert _browser(token[:-2] + "xx").get(INBOX).status_code == 401
    # Another tenant's recipient with the same external_id stays out of reach.
    make_recipients(1, for_tenant=other_tenant)
    their_token = _token(other_api, "user-0")["token"]
    assert _browser(their_token).get(INBOX).json()["results"] == []


def test_the_token_can_be_a_query_parameter_where_headers_cannot_be_set(api, inbox):
    token = _token(api, "user-1", ttl_seconds=120)["token"]
    assert APIClient().get(INBOX, {"token": token}).json()["results"][0]["title"] == "Order N2 shipped"


@override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.com"])
def test_an_allowed_origin_may_call_the_inbox_from_a_browser_and_nothing_else(api, inbox):
    token = _token(api, "user-1", ttl_seconds=120)["token"]
    preflight: dict[str, Any] = {
        "HTTP_ORIGIN": "https://app.example.com",
        "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "GET",
        "HTTP_ACCESS_CONTROL_REQUEST_HEADERS": "authorization",
    }

    allowed = APIClient().options(INBOX, **preflight)
    stranger = APIClient().options(INBOX, **{**preflight, "HTTP_ORIGIN": "https://evil.example"})
    elsewhere = APIClient().options("/api/v1/recipients/", **preflight)
    listed = _browser(token).get(INBOX, HTTP_ORIGIN="https://app.example.com")

    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "authorization" in allowed["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Origin" not in stranger
    assert "Access-Control-Allow-Origin" not in elsewhere
    assert listed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "Access-Control-Allow-Credentials" not in listed


def test_the_tenant_key_acts_for_a_named_recipient(api, inbox):
    assert api.get(INBOX).status_code == 400
    assert api.get(INBOX, {"recipient": "ghost"}).status_code == 404
    assert len(api.get(INBOX, {"recipient": "user-1"}).json()["results"]) == 1


def test_read_unread_seen_and_archive(api, inbox):
    browser = _browser(_token(api, "user-0")["token"])
    newest, middle, oldest = (item["id"] for item in browser.get(INBOX).json()["results"])

    assert browser.post(f"{INBOX}{newest}/read/").json() == {"updated": 1}
    assert browser.post(f"{INBOX}{newest}/read/").json() == {"updated": 0}
    delivery = Delivery.objects.get(pk=newest)
    assert delivery.status == "read" and delivery.read_at and delivery.seen_at
    assert browser.get(f"{INBOX}unread-count/").json() == {"unread": 2, "unseen": 2}

    browser.post(f"{INBOX}{newest}/unread/")
    assert Delivery.objects.get(pk=newest).read_at is None
    assert browser.get(INBOX, {"status": "unread"}).json()["results"][0]["id"] == newest

    assert browser.post(f"{INBOX}{oldest}/archive/").json() == {"updated": 1}
    assert [i["id"] for i in browser.get(INBOX).json()["results"]] == [newest, middle]
    assert [i["id"] for i in browser.get(INBOX, {"archived": "true"}).json()["results"]] == [oldest]

    assert browser.post(f"{INBOX}read-all/").json() == {"updated": 3}
    assert browser.get(f"{INBOX}unread-count/").json() == {"unread": 0, "unseen": 0}
    browser.post(f"{INBOX}{oldest}/unarchive/")
    assert len(browser.get(INBOX).json()["results"]) == 3


def test_cursor_pagination_is_stable(api, inbox):
    browser = _browser(_token(api, "user-0")["token"])
    first = browser.get(INBOX, {"limit": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = browser.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    assert {i["id"] for i in first["results"]}.isdisjoint({i["id"] for i in second["results"]})


def test_token_lifetime_is_bounded(api, inbox):
    response = api.post("/api/v1/recipients/user-0/inbox-token/", {"ttl_seconds": 999999}, format="json")
    assert response.status_code == 400 and "ttl_seconds" in response.json()["fields"]
