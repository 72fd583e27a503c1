"""Recipients (CRUD by external_id, validation, bulk upsert), devices, topics, categories and
preferences (per recipient and tenant defaults) through the API."""

from __future__ import annotations

import pytest

from apps.notifications.models import Device, Preference, Recipient, TopicMembership

pytestmark = pytest.mark.django_db

URL = "/api/v1/recipients/"


def test_create_read_update_and_delete_by_external_id(api):
    created = api.post(
        URL, {"external_id": "user@example.com", "email": "user@example.com", "timezone": "Europe/Paris"}, format="json"
    )
    assert created.status_code == 201, created.json()
    assert api.post(URL, {"external_id": "user@example.com"}, format="json").status_code == 409
    one = f"{URL}user@example.com/"
    assert api.get(one).json()["timezone"] == "Europe/Paris"
    patched = api.patch(one, {"phone": "+44 20 7946 0018", "data": {"plan": "pro"}}, format="json").json()
    assert patched["phone"] == "+442079460018" and patched["email"] == "user@example.com"
    replaced = api.put(one, {"external_id": "user@example.com", "locale": "de"}, format="json").json()
    assert (replaced["email"], replaced["locale"], replaced["data"]) == ("", "de", {})
    assert api.patch(one, {"unsubscribed": True}, format="json").json()["unsubscribed"] is True
    assert api.delete(one).status_code == 204
    assert api.get(one).status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("phone", "4155550100"),
        ("phone", "+1415"),
        ("timezone", "Mars/Olympus"),
        ("locale", "not a locale"),
        ("email", "nope"),
        ("webhook_url", "ftp://x"),
    ],
)
def test_invalid_attributes_are_refused(api, field, value):
    response = api.post(URL, {"external_id": "u1", field: value}, format="json")
    assert response.status_code == 400 and field in response.json()["fields"]
    assert not Recipient.objects.exists()


def test_bulk_upsert_creates_updates_and_keeps_unsent_fields(api):
    api.post(URL, {"external_id": "u-0", "email": "old@example.com", "phone": "+14155550100"}, format="json")
    items = [{"external_id": f"u-{i}", "email": f"u{i}@example.com", "locale": "fr"} for i in range(2500)]
    response = api.post(f"{URL}bulk/", {"recipients": items}, format="json")
    assert response.status_code == 200 and response.json() == {"created": 2499, "updated": 1}
    first = Recipient.objects.get(external_id="u-0")
    assert (first.email, first.phone, first.locale) == ("u0@example.com", "+14155550100", "fr")
    assert Recipient.objects.count() == 2500


def test_bulk_upsert_refuses_the_whole_call_for_one_bad_item(api):
    items = [{"external_id": "a"}, {"external_id": "b", "phone": "12"}, {"external_id": "a"}]
    error = api.post(f"{URL}bulk/", {"recipients": items}, format="json").json()
    assert set(error["fields"]["recipients"]) == {"1", "2"}
    assert not Recipient.objects.exists()


def test_devices_register_move_and_deactivate(api, make_recipients):
    make_recipients(2)
    first = api.post(f"{URL}user-0/devices/", {"platform": "ios", "token": "tok-1"}, format="json")
    assert first.status_code == 201
    moved = api.post(f"{URL}user-1/devices/", {"platform": "ios", "token": "tok-1"}, format="json").json()
    assert moved["id"] == first.json()["id"]
    assert api.get(f"{URL}user-0/devices/").json()["count"] == 0
    assert api.delete(f"{URL}user-1/devices/{moved['id']}/").status_code == 204
    device = Device.objects.get(token="tok-1")
    assert (device.active, device.deactivated_reason) == (False, "unregistered")
    assert api.post(f"{URL}user-0/devices/", {"platform": "fax", "token": "x"}, format="json").status_code == 400


def test_topics_and_bulk_membership(api, make_recipients):
    make_recipients(3)
    assert api.post("/api/v1/topics/", {"key": "beta", "name": "Beta"}, format="json").status_code == 201
    assert api.post("/api/v1/topics/", {"key": "beta"}, format="json").status_code == 409
    added = api.post("/api/v1/topics/beta/subscribers/", {"recipients": ["user-0", "user-1", "user-1"]}, format="json")
    assert added.json() == {"added": 2}
    again = api.post("/api/v1/topics/beta/subscribers/", {"recipients": ["user-1", "user-2"]}, format="json").json()
    assert again == {"added": 1}
    unknown = api.post("/api/v1/topics/beta/subscribers/", {"recipients": ["ghost"]}, format="json")
    assert unknown.status_code == 400 and "ghost" in str(unknown.json()["fields"])
    assert api.get("/api/v1/topics/beta/").json()["subscribers"] == 3
    assert [r["external_id"] for r in api.get("/api/v1/topics/beta/subscribers/").json()["results"]] == [
        "user-0",
        "user-1",
        "user-2",
    ]
    assert api.post("/api/v1/topics/beta/subscribers/remove/", {"recipients": ["user-0"]}, format="json").json() == {
        "removed": 1
    }
    assert TopicMembership.objects.count() == 2
    assert api.get(URL, {"topic": "beta"}).json()["count"] == 2


def test_categories_can_be_marked_critical(api):
    assert api.post("/api/v1/categories/", {"key": "security", "critical": True}, format="json").status_code == 201
    assert api.get("/api/v1/categories/security/").json()["critical"] is True
    assert api.patch("/api/v1/categories/security/", {"critical": False}, format="json").json()["critical"] is False


def test_recipient_preferences_round_trip_and_merge(api, make_recipients):
    make_recipients(1)
    api.post("/api/v1/categories/", {"key": "marketing"}, format="json")
    api.post("/api/v1/categories/", {"key": "security", "critical": True}, format="json")
    api.put(
        "/api/v1/preferences/defaults/",
        {"preferences": [{"category": "marketing", "channels": {"sms": False}}]},
        format="json",
    )
    body = {
        "preferences": [
            {"category": None, "quiet_hours": {"start": "22:00", "end": "07:00"}},
            {"category": "marketing", "channels": {"email": False}, "digest": "weekly"},
        ]
    }
    response = api.put(f"{URL}user-0/preferences/", body, format="json")
    assert response.status_code == 200, response.json()
    got = response.json()
    assert got["preferences"][1] == {
        "category": "marketing",
        "channels": {"email": False},
        "digest": "weekly",
        "quiet_hours": None,
    }
    marketing = got["effective"]["marketing"]
    assert marketing["channels"]["email"] is False and marketing["channels"]["sms"] is False  # own + tenant default
    assert marketing["channels"]["push"] is True and marketing["digest"] == "weekly"
    assert marketing["quiet_hours"] == {"start": "22:00", "end": "07:00"}  # from the all-categories layer
    assert got["effective"]["security"]["critical"] is True
    assert api.get(f"{URL}user-0/preferences/").json() == got
    # PUT replaces the set
    api.put(f"{URL}user-0/preferences/", {"preferences": [], "unsubscribed": True}, format="json")
    assert Preference.objects.filter(recipient__external_id="user-0").count() == 0
    assert Recipient.objects.get(external_id="user-0").unsubscribed_at is not None


def test_invalid_preferences_are_refused(api, make_recipients):
    make_recipients(1)
    bad = {"preferences": [{"category": "nope"}, {"channels": {"fax": True}}, {"digest": "yearly"}]}
    response = api.put(f"{URL}user-0/preferences/", bad, format="json")
    assert response.status_code == 400
    assert Preference.objects.count() == 0


def test_other_tenants_recipients_are_invisible(api, other_api, make_recipients, other_tenant):
    make_recipients(1, for_tenant=other_tenant)
    assert api.get(f"{URL}user-0/").status_code == 404
    assert api.get(f"{URL}user-0/devices/").status_code == 404
    assert api.put(f"{URL}user-0/preferences/", {"preferences": []}, format="json").status_code == 404
    assert api.post(f"{URL}user-0/inbox-token/").status_code == 404
    assert api.get(URL).json()["count"] == 0
    # The same external_id may exist in both tenants.
    assert api.post(URL, {"external_id": "user-0"}, format="json").status_code == 201
