"""The links in emails: open pixel, click redirect and one-click unsubscribe; a bad signature changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.core import signing
from django.test import Client

from apps.events.models import Event, Rule
from apps.notifications.models import Category, Delivery, Engagement, Notification, Preference, Recipient
from apps.notifications.services.preferences import preferences_effective
from apps.providers import tracking

pytestmark = pytest.mark.django_db


@pytest.fixture
def recipient(tenant: Any) -> Recipient:
    return Recipient.objects.create(tenant=tenant, external_id="ada", email="ada@example.com")


@pytest.fixture
def orders(tenant: Any) -> Category:
    return Category.objects.create(tenant=tenant, key="orders")


@pytest.fixture
def delivery(tenant: Any, recipient: Recipient, orders: Category) -> Delivery:
    notification = Notification.objects.create(tenant=tenant, category=orders, channels=["email"])
    return Delivery.objects.create(
        tenant=tenant, notification=notification, recipient=recipient, channel="email", status="sent"
    )


def path_of(url: str) -> str:
    assert url.startswith(settings.PUBLIC_URL)
    return url.removeprefix(settings.PUBLIC_URL)


def tampered(url: str) -> str:
    return url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")


def test_the_pixel_counts_opens_of_the_delivery(client: Client, delivery: Delivery):
    url = path_of(tracking.open_url(str(delivery.pk)))

    first = client.get(url)
    client.get(url)

    assert first.status_code == 200 and first["Content-Type"] == "image/gif"
    assert "no-cache" in first["Cache-Control"]
    engagement = Engagement.objects.get()
    assert (engagement.delivery_id, engagement.kind, engagement.count) == (delivery.pk, "open", 2)
    assert engagement.tenant_id == delivery.tenant_id
    assert engagement.last_at >= engagement.first_at


def test_a_click_is_counted_and_redirects_to_the_signed_url(client: Client, delivery: Delivery):
    url = path_of(tracking.click_url(str(delivery.pk), "https://shop.test/orders/7?a=1&b=2"))

    answer = client.get(url)

    assert answer.status_code == 302 and answer["Location"] == "https://shop.test/orders/7?a=1&b=2"
    assert Engagement.objects.get().url == "https://shop.test/orders/7?a=1&b=2"


def test_the_delivery_shows_its_opens_and_clicks_and_only_to_its_tenant(
    client: Client, api: Any, other_api: Any, delivery: Delivery
):
    opened = path_of(tracking.open_url(str(delivery.pk)))
    client.get(opened)
    client.get(opened)
    client.get(path_of(tracking.click_url(str(delivery.pk), "https://shop.test/orders/7")))

    detail = api.get(f"/api/v1/deliveries/{delivery.pk}/").json()

    assert detail["engagement"]["opens"]["count"] == 2
    assert [(c["url"], c["count"]) for c in detail["engagement"]["clicks"]] == [("https://shop.test/orders/7", 1)]
    assert other_api.get(f"/api/v1/deliveries/{delivery.pk}/").status_code == 404


def test_a_first_open_and_a_first_click_per_link_are_platform_events(client: Client, tenant: Any, delivery: Delivery):
    Rule.objects.create(tenant=tenant, name="engagement", event_type="delivery.*", actions=[])
    opened = path_of(tracking.open_url(str(delivery.pk)))
    clicked = path_of(tracking.click_url(str(delivery.pk), "https://shop.test/orders/7"))

    for url in (opened, opened, clicked, clicked):
        client.get(url)

    events = {e.type: e for e in Event.objects.filter(tenant=tenant)}
    assert sorted(events) == ["delivery.clicked", "delivery.opened"]  # one each, not one per view
    assert events["delivery.clicked"].payload["url"] == "https://shop.test/orders/7"
    assert events["delivery.opened"].payload["recipient"] == "ada"
    assert events["delivery.opened"].subject == {"type": "delivery", "id": str(delivery.pk)}


@pytest.mark.parametrize("make", [tracking.open_url, lambda d: tracking.click_url(d, "https://shop.test/")])
def test_a_bad_signature_is_not_found_and_records_nothing(client: Client, delivery: Delivery, make: Any):
    url = path_of(make(str(delivery.pk)))
    url = tampered(url.removesuffix(".gif")) + (".gif" if url.endswith(".gif") else "")

    assert client.get(url).status_code == 404
    assert not Engagement.objects.exists()


def test_a_click_token_cannot_be_replayed_as_an_open_or_pointed_elsewhere(client: Client, delivery: Delivery):
    token = tracking.click_url(str(delivery.pk), "https://shop.test/").rsplit("/", 1)[1]

    assert client.get(f"/t/o/{token}.gif").status_code == 404
    assert client.get(f"/t/c/{token}?next=https://evil.test/")["Location"] == "https://shop.test/"


def test_a_link_for_a_purged_delivery_still_answers_but_records_nothing(client: Client, tenant: Any):
    url = path_of(tracking.click_url("018f0000-0000-7000-8000-000000000000", "https://shop.test/"))

    assert client.get(url).status_code == 302
    assert not Engagement.objects.exists()


# --- Unsubscribe ----------------------------------------------------------------------------------


def unsubscribe_path(tenant: Any, recipient: Recipient, category: str = "") -> str:
    return path_of(
        tracking.unsubscribe_url(tenant_id=str(tenant.pk), recipient_id=str(recipient.pk), category=category)
    )


def test_get_shows_a_confirmation_and_changes_nothing(client: Client, tenant: Any, recipient: Recipient, orders):
    answer = client.get(unsubscribe_path(tenant, recipient, "orders"))

    assert answer.status_code == 200
    assert b'<form method="post">' in answer.content
    assert not Preference.objects.exists()


def test_one_click_post_turns_email_off_for_the_category_only(
    client: Client, tenant: Any, recipient: Recipient, orders: Category
):
    Category.objects.create(tenant=tenant, key="security")
    Preference.objects.create(tenant=tenant, recipient=recipient, category=None, channels={"sms": False})

    answer = client.post(unsubscribe_path(tenant, recipient, "orders"), {"List-Unsubscribe": "One-Click"})

    assert answer.status_code == 200
    effective = preferences_effective(tenant=tenant, recipient=recipient)
    assert effective["orders"]["channels"]["email"] is False
    assert effective["security"]["channels"]["email"] is True
    assert effective["*"]["channels"]["sms"] is False  # the recipient's other choices are kept
    recipient.refresh_from_db()
    assert recipient.unsubscribed_at is None


def test_without_a_category_the_recipient_unsubscribes_from_everything(
    client: Client, tenant: Any, recipient: Recipient
):
    path = unsubscribe_path(tenant, recipient)

    assert client.post(path).status_code == 200
    recipient.refresh_from_db()
    first = recipient.unsubscribed_at
    assert first is not None
    assert client.post(path).status_code == 200
    recipient.refresh_from_db()
    assert recipient.unsubscribed_at == first


def test_a_forged_unsubscribe_link_changes_nothing(client: Client, tenant: Any, recipient: Recipient):
    path = tampered(unsubscribe_path(tenant, recipient))

    assert client.post(path).status_code == 404
    assert client.get(path).status_code == 404
    recipient.refresh_from_db()
    assert recipient.unsubscribed_at is None


def test_a_link_for_another_tenants_recipient_does_nothing(client: Client, tenant: Any, other_tenant: Any, recipient):
    path = path_of(tracking.unsubscribe_url(tenant_id=str(other_tenant.pk), recipient_id=str(recipient.pk)))

    assert client.post(path).status_code == 404
    recipient.refresh_from_db()
    assert recipient.unsubscribed_at is None


def test_a_signed_token_is_djangos_own_and_follows_the_secret_key(settings: Any):
    # Given a payload signed with the signer kept per salt
    payload = {"t": "tenant-1", "r": 7, "c": "orders"}
    token = tracking.signed_token(payload, tracking.UNSUBSCRIBE_SALT)

    # Then Django's signing reads it, under that salt only
    assert signing.loads(token, salt=tracking.UNSUBSCRIBE_SALT) == payload
    with pytest.raises(signing.BadSignature):
        signing.loads(token, salt=tracking.OPEN_SALT)

    # And after the secret key changes, new tokens are signed with the new key
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    rotated = tracking.signed_token(payload, tracking.UNSUBSCRIBE_SALT)
    assert signing.loads(rotated, salt=tracking.UNSUBSCRIBE_SALT) == payload
    with pytest.raises(signing.BadSignature):
        signing.loads(token, salt=tracking.UNSUBSCRIBE_SALT)
