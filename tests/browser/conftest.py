"""Headless Chromium (Debian's `chromium` and `chromium-driver`, through Selenium) against a live
server, the real API and a real worker. Nothing downloads a browser: a missing one fails the run
(`scripts/ensure_services.sh` installs it for `make test`). Screenshots of each state go to
data/screenshots/<run>/ (not committed) for people to look at."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.realtime.conftest import start_realtime  # noqa: F401 (the realtime process, for the live path)

CHROMIUM = os.environ.get("SIGNALBOX_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SIGNALBOX_CHROMEDRIVER", "/usr/bin/chromedriver")
SHOTS = Path(settings.BASE_DIR) / "data" / "screenshots" / os.environ.get("SIGNALBOX_TEST_RUN", "local")

IN_APP = {
    "default": {
        "in_app": {
            "title": "Order {{ order_id }} shipped",
            "body": "{{ note }}",
            "action_url": "https://shop.example.com/orders/{{ order_id }}",
            "data": {"secondary_url": "https://shop.example.com/help", "secondary_label": "Help"},
        },
        "email": {"subject": "Order {{ order_id }} shipped", "text": "Order {{ order_id }} is on its way."},
    }
}


@pytest.fixture(scope="session")
def chrome() -> Iterator[Any]:
    """One headless Chromium for the session, offline (this machine's network is closed)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"Headless Chromium is required and not installed ({', '.join(missing)} missing): "
            "run scripts/ensure_services.sh or `apt-get install -y chromium chromium-driver`.",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sbx-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        "--lang=en-US",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def _blank_page_after(chrome: Any) -> Iterator[None]:
    """Leaves no page polling the live server after a test (its tenant and token are flushed)."""
    yield
    chrome.get("about:blank")


@pytest.fixture
def shot(chrome: Any, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Saves a screenshot named after the test and the state."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(state: str) -> Path:
        path = SHOTS / f"{request.node.name}-{state}.png"
        chrome.save_screenshot(str(path))
        return path

    return take


@pytest.fixture
def acme(worker: Any, settings: Any) -> Any:
    """The `acme` tenant (email on the recording sink), its recipient user-0, an in-app template,
    and the demo page pointed at them."""
    from apps.notifications.services.recipients import recipients_upsert
    from apps.notifications.services.templates import template_create
    from apps.tenancy.services import tenant_create
    from tests.notifications.conftest import RECORDING

    tenant = tenant_create(slug="acme", name="Acme")
    tenant.settings = {"channel_providers": RECORDING, "branding": {"name": "Acme Shop", "color": "#aa3300"}}
    tenant.save(update_fields=["settings"])
    recipients_upsert(tenant=tenant, items=[{"external_id": "user-0", "email": "u0@example.com", "name": "Ada"}])
    template_create(
        tenant=tenant,
        key="order_shipped",
        definition={
            "name": "order shipped",
            "category": "orders",
            "variables": [{"name": "order_id", "example": "A-1"}, {"name": "note", "example": "x"}],
            "default_channels": ["in_app", "email"],
            "content": IN_APP,
        },
    )
    settings.SIGNALBOX_INBOX_DEMO = True
    settings.SIGNALBOX_INBOX_DEMO_TENANT = "acme"
    settings.SIGNALBOX_INBOX_DEMO_RECIPIENT = "user-0"
    return tenant
