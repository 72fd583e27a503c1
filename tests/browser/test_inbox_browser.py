"""The recipient's side in a real browser: <signalbox-inbox>, <signalbox-preferences> and the hosted
preference page, against the live API and a real worker; the inbox both polling and following the
realtime process's stream (served from its own origin, as in production)."""

from __future__ import annotations

from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from apps.notifications.models import Category, Delivery
from apps.providers.links import preferences_url
from tests.conftest import client_for, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.worker]

DEMO = "/inbox/demo/?poll=0.5"


def _send(api: Any, order_id: str, note: str = "On its way.") -> str:
    response = api.post(
        "/api/v1/notifications/",
        {"template": "order_shipped", "recipients": ["user-0"], "payload": {"order_id": order_id, "note": note}},
        format="json",
    )
    assert response.status_code in (201, 202), response.json()
    return str(response.json()["id"])


def _in_inbox(api: Any, order_id: str) -> Any:
    items = api.get("/api/v1/inbox/", {"recipient": "user-0", "archived": "all"}).json()["results"]
    return next((i for i in items if order_id in i["title"]), None)


def wait(chrome: Any, seconds: float) -> WebDriverWait[Any]:
    """Waits that retry when the component re-rendered an element between finding and using it."""
    return WebDriverWait(chrome, seconds, ignored_exceptions=(StaleElementReferenceException,))


def _click(chrome: Any, order_id: str, selector: str) -> None:
    wait(chrome, 5).until(lambda d: _item(d, order_id).find_element(By.CSS_SELECTOR, selector).click() or True)


def _press(chrome: Any, key: str) -> None:
    """Sends a key to whatever has focus (found again if the component re-rendered it)."""
    wait(chrome, 5).until(lambda d: d.switch_to.active_element.send_keys(key) or True)


def _inbox(chrome: Any) -> Any:
    return chrome.find_element(By.ID, "inbox").shadow_root


def _badge(chrome: Any) -> str:
    badge = _inbox(chrome).find_element(By.CSS_SELECTOR, ".badge")
    return "" if badge.get_attribute("hidden") is not None else badge.text


def _item(chrome: Any, order_id: str) -> Any:
    for li in _inbox(chrome).find_elements(By.CSS_SELECTOR, "li.item"):
        if order_id in li.find_element(By.CSS_SELECTOR, ".title").text:
            return li
    return None


def test_inbox_shows_the_badge_updates_live_and_reads_and_archives(chrome, shot, live_server, acme):
    api = client_for(acme)
    _send(api, "A-1", note="<img src=x onerror=alert(1)> stays text")
    wait_for(lambda: _in_inbox(api, "A-1"), message="the first in-app item")

    chrome.get(live_server.url + DEMO)
    wait(chrome, 10).until(lambda d: _badge(d) == "1")
    shot("badge")
    _inbox(chrome).find_element(By.CSS_SELECTOR, ".bell").click()
    # Content is text: the markup in the body is shown, never parsed.
    body = wait(chrome, 5).until(lambda d: _item(d, "A-1").find_element(By.CSS_SELECTOR, ".body").text)
    assert "<img src=x onerror=alert(1)>" in body
    images = wait(chrome, 5).until(lambda d: [len(_item(d, "A-1").find_elements(By.CSS_SELECTOR, ".body img"))])
    assert images == [0]
    links = wait(chrome, 5).until(
        lambda d: [a.get_attribute("href") for a in _item(d, "A-1").find_elements(By.CSS_SELECTOR, "a.action")]
    )
    assert links == ["https://shop.example.com/orders/A-1", "https://shop.example.com/help"]
    shot("panel-open")

    # A new notification appears without a reload (the component polls every 0.5 s here).
    _send(api, "B-2")
    wait_for(lambda: _in_inbox(api, "B-2"), message="the second in-app item")
    wait(chrome, 2).until(lambda d: _item(d, "B-2") is not None and _badge(d) == "2")
    announced = _inbox(chrome).find_element(By.CSS_SELECTOR, "[aria-live]")
    wait(chrome, 2).until(lambda d: "Order B-2 shipped" in announced.get_attribute("textContent"))
    shot("new-item")

    # Clicking it marks it read, as the API confirms.
    _click(chrome, "B-2", ".title")
    wait_for(lambda: _in_inbox(api, "B-2")["read"], message="B-2 read in the API")
    wait(chrome, 5).until(lambda d: _badge(d) == "1" and "unread" not in _item(d, "B-2").get_attribute("class"))
    shot("read")

    # Archive removes it from the list (and the API has it archived).
    _click(chrome, "B-2", "[data-action=archive]")
    wait(chrome, 5).until(lambda d: _item(d, "B-2") is None)
    assert _in_inbox(api, "B-2")["archived_at"] is not None
    shot("archived")


def test_keyboard_only_opens_the_panel_moves_and_marks_read(chrome, shot, live_server, acme):
    api = client_for(acme)
    _send(api, "K-1")
    wait_for(lambda: _in_inbox(api, "K-1"), message="K-1 in the inbox")
    _send(api, "K-2")
    wait_for(lambda: _in_inbox(api, "K-2"), message="K-2 in the inbox")

    chrome.get(live_server.url + DEMO)
    wait(chrome, 10).until(lambda d: _badge(d) == "2")
    body = chrome.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the bell is the page's first focusable element
    active = chrome.switch_to.active_element
    active.send_keys(Keys.ENTER)
    wait(chrome, 5).until(lambda d: _inbox(d).find_element(By.CSS_SELECTOR, ".panel").is_displayed())

    # The newest item has focus; ArrowDown moves to the older one; Enter reads it.
    def focused(d: Any) -> Any:
        script = "const r = document.getElementById('inbox').shadowRoot; return r.activeElement?.textContent"
        return d.execute_script(script)

    wait(chrome, 5).until(lambda d: "K-2" in (focused(d) or ""))
    _press(chrome, Keys.ARROW_DOWN)
    wait(chrome, 5).until(lambda d: "K-1" in (focused(d) or ""))
    shot("keyboard-focus")
    _press(chrome, Keys.ENTER)
    wait_for(lambda: _in_inbox(api, "K-1")["read"], message="K-1 read in the API")
    assert _in_inbox(api, "K-2")["read"] is False
    _press(chrome, Keys.ESCAPE)
    wait(chrome, 5).until(lambda d: not _inbox(d).find_element(By.CSS_SELECTOR, ".panel").is_displayed())
    shot("keyboard-closed")


def test_hosted_page_turns_a_channel_off_and_the_next_notification_honours_it(chrome, shot, live_server, acme):
    from apps.notifications.models import Recipient

    api = client_for(acme)
    api.post("/api/v1/categories/", {"key": "security", "name": "Security", "critical": True}, format="json")
    recipient = Recipient.objects.get(tenant=acme, external_id="user-0")
    url = preferences_url(tenant_id=str(acme.pk), recipient_id=recipient.pk)

    chrome.get(url.replace("http://127.0.0.1:8000", live_server.url))
    assert "Acme Shop" in chrome.find_element(By.CSS_SELECTOR, ".sbx-brand").text
    # A critical category is shown, locked on.
    locked = chrome.find_element(By.ID, "c:security:email")
    assert locked.is_selected() and not locked.is_enabled()
    orders_email = chrome.find_element(By.ID, "c:orders:email")
    assert orders_email.is_selected()
    shot("hosted-before")
    orders_email.click()
    chrome.find_element(By.ID, "save").click()
    wait(chrome, 5).until(lambda d: d.find_elements(By.ID, "saved"))
    assert not chrome.find_element(By.ID, "c:orders:email").is_selected()
    assert chrome.find_element(By.ID, "c:security:email").is_selected()
    shot("hosted-saved")

    effective = api.get("/api/v1/recipients/user-0/preferences/").json()["effective"]
    assert effective["orders"]["channels"]["email"] is False
    assert effective["security"]["channels"]["email"] is True

    notification = _send(api, "P-1")
    settled = wait_for(
        lambda: (
            dict(
                Delivery.objects.filter(notification_id=notification)
                .exclude(status__in=["pending", "queued", "sending"])
                .values_list("channel", "status")
            ).keys()
            >= {"email", "in_app"}
            and dict(Delivery.objects.filter(notification_id=notification).values_list("channel", "status"))
        ),
        message="both deliveries settled",
    )
    assert settled["email"] == "suppressed" and settled["in_app"] == "delivered"
    assert Category.objects.get(tenant=acme, key="security").critical


def test_preferences_component_saves_and_keeps_critical_locked(chrome, shot, live_server, acme):
    api = client_for(acme)
    api.post("/api/v1/categories/", {"key": "security", "name": "Security", "critical": True}, format="json")
    api.post("/api/v1/categories/", {"key": "orders", "name": "Orders"}, format="json")

    chrome.get(live_server.url + DEMO)
    prefs = lambda d: d.find_element(By.ID, "preferences").shadow_root  # noqa: E731
    box = wait(chrome, 10).until(lambda d: prefs(d).find_elements(By.CSS_SELECTOR, "input[name='c:orders:sms']"))
    locked = prefs(chrome).find_element(By.CSS_SELECTOR, "input[name='c:security:sms']")
    assert locked.is_selected() and not locked.is_enabled()
    box[0].click()
    prefs(chrome).find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(chrome, 5).until(lambda d: "saved" in prefs(d).find_element(By.CSS_SELECTOR, ".status").text)
    shot("component-saved")
    effective = api.get("/api/v1/recipients/user-0/preferences/").json()["effective"]
    assert effective["orders"]["channels"]["sms"] is False
    assert effective["security"]["channels"]["sms"] is True


def test_inbox_takes_new_items_from_the_realtime_stream(chrome, shot, live_server, acme, start_realtime, settings):
    # Given the realtime process beside the API, the page's origin allowed by the tenant, and a
    # component that would poll only once a minute: a new item within 2 s can only come by the stream
    acme.settings = {**acme.settings, "inbox": {"allowed_origins": [live_server.url]}}
    acme.save(update_fields=["settings"])
    realtime = start_realtime()
    settings.SIGNALBOX_INBOX_DEMO_STREAM_URL = f"http://127.0.0.1:{realtime.port}/api/v1/inbox/stream/"
    api = client_for(acme)
    _send(api, "S-1")
    wait_for(lambda: _in_inbox(api, "S-1"), message="the first in-app item")
    chrome.get(live_server.url + "/inbox/demo/?poll=60")
    wait(chrome, 10).until(lambda d: _badge(d) == "1")
    _inbox(chrome).find_element(By.CSS_SELECTOR, ".bell").click()
    wait(chrome, 10).until(
        lambda d: d.execute_script(
            "return performance.getEntriesByType('resource').some(e => e.name.includes('/inbox/stream/'))"
        )
    )

    # When a notification is sent
    _send(api, "S-2")
    wait_for(lambda: _in_inbox(api, "S-2"), message="the second in-app item")

    # Then it appears, and the badge counts it, without a reload and long before the next poll
    wait(chrome, 2).until(lambda d: _item(d, "S-2") is not None and _badge(d) == "2")
    shot("streamed-item")
