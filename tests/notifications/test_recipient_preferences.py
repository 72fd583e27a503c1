"""A recipient manages their own preferences with their recipient token (the preference centre's API)."""

from __future__ import annotations

from rest_framework.test import APIClient

URL = "/api/v1/recipients/"


def _browser(api: APIClient, external_id: str) -> APIClient:
    response = api.post(f"{URL}{external_id}/inbox-token/", {}, format="json")
    assert response.status_code == 201, response.json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Recipient {response.json()['token']}")
    return client


def _categories(api: APIClient) -> None:
    api.post("/api/v1/categories/", {"key": "marketing", "name": "News and offers"}, format="json")
    api.post("/api/v1/categories/", {"key": "security", "critical": True}, format="json")


def test_a_recipient_reads_and_changes_their_own_preferences_with_their_token(api, make_recipients):
    make_recipients(1)
    _categories(api)
    browser = _browser(api, "user-0")

    got = browser.get(f"{URL}user-0/preferences/")
    assert got.status_code == 200, got.json()
    assert {"key": "security", "name": "security", "description": "", "critical": True} in got.json()["categories"]
    assert "email" in got.json()["channels"]

    body = {
        "preferences": [
            {"category": None, "quiet_hours": {"start": "22:00", "end": "07:00"}, "digest": "daily"},
            {"category": "marketing", "channels": {"email": False}},
        ],
        "timezone": "Europe/Paris",
        "locale": "fr-FR",
    }
    changed = browser.put(f"{URL}user-0/preferences/", body, format="json")
    assert changed.status_code == 200, changed.json()
    assert changed.json()["effective"]["marketing"]["channels"]["email"] is False
    assert changed.json()["timezone"] == "Europe/Paris" and changed.json()["locale"] == "fr-FR"
    # The tenant's back end sees the same, with its key.
    assert api.get(f"{URL}user-0/preferences/").json() == changed.json()


def test_a_recipient_token_opens_no_other_recipients_preferences(api, make_recipients):
    make_recipients(2)
    browser = _browser(api, "user-0")

    assert browser.get(f"{URL}user-1/preferences/").status_code == 404
    refused = browser.put(f"{URL}user-1/preferences/", {"preferences": [], "unsubscribed": True}, format="json")
    assert refused.status_code == 404
    assert api.get(f"{URL}user-1/preferences/").json()["unsubscribed"] is False
    # Nor anything else about recipients.
    assert browser.get(f"{URL}user-0/").status_code == 401


def test_critical_categories_cannot_be_turned_off(api, make_recipients):
    make_recipients(1)
    _categories(api)
    browser = _browser(api, "user-0")

    for client in (browser, api):
        refused = client.put(
            f"{URL}user-0/preferences/",
            {"preferences": [{"category": "security", "channels": {"email": False}}]},
            format="json",
        )
        assert refused.status_code == 400
        assert refused.json()["code"] == "critical_category_locked"
        assert "0" in refused.json()["fields"]["preferences"]
    assert api.get(f"{URL}user-0/preferences/").json()["preferences"] == []
    # Turning one on (or leaving it alone) is fine.
    kept = browser.put(
        f"{URL}user-0/preferences/",
        {"preferences": [{"category": "security", "channels": {"email": True}}]},
        format="json",
    )
    assert kept.status_code == 200, kept.json()


def test_invalid_profile_changes_nothing(api, make_recipients):
    make_recipients(1)
    _categories(api)
    browser = _browser(api, "user-0")

    refused = browser.put(
        f"{URL}user-0/preferences/",
        {"preferences": [{"category": "marketing", "channels": {"email": False}}], "timezone": "Mars/Olympus"},
        format="json",
    )
    assert refused.status_code == 400 and "timezone" in refused.json()["fields"]
    assert api.get(f"{URL}user-0/preferences/").json()["preferences"] == []
