"""Typed access to the portal's settings: the inbox demo page (defaults in project/settings.py;
apps/core/conf.py says why)."""

from __future__ import annotations

from dataclasses import dataclass

from apps.core.conf import as_bool, as_str, setting


@dataclass(frozen=True)
class InboxDemoSettings:
    enabled: bool  # SIGNALBOX_INBOX_DEMO: /inbox/demo/ without DEBUG
    tenant: str  # SIGNALBOX_INBOX_DEMO_TENANT: the demo tenant's slug
    recipient: str  # SIGNALBOX_INBOX_DEMO_RECIPIENT: the demo recipient's external id
    stream_url: str  # SIGNALBOX_INBOX_DEMO_STREAM_URL: the realtime stream the page opens, or empty


def inbox_demo_settings() -> InboxDemoSettings:
    return InboxDemoSettings(
        enabled=as_bool(setting("SIGNALBOX_INBOX_DEMO"), "SIGNALBOX_INBOX_DEMO"),
        tenant=as_str(setting("SIGNALBOX_INBOX_DEMO_TENANT"), "SIGNALBOX_INBOX_DEMO_TENANT"),
        recipient=as_str(setting("SIGNALBOX_INBOX_DEMO_RECIPIENT"), "SIGNALBOX_INBOX_DEMO_RECIPIENT"),
        stream_url=as_str(setting("SIGNALBOX_INBOX_DEMO_STREAM_URL"), "SIGNALBOX_INBOX_DEMO_STREAM_URL"),
    )
