"""The hosted preference page's logic: tenant branding and allowed origins, and the form <-> layers.

Tenant settings read here (`Tenant.settings`, all optional):
    "branding": {"name": "Acme", "logo_url": "https://…/logo.png", "color": "#0b5fff"}
    "inbox": {"allowed_origins": ["https://app.acme.com"]}   # may frame the page, call the inbox API
A value that does not validate is ignored (the page falls back to the tenant's name, no logo, the
default colour, and no framing), so a typo never breaks the page or opens it to every origin.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from typing import Any

from apps.notifications.models import Digest
from apps.providers.base import Channel
from apps.tenancy.origins import tenant_allowed_origins

COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
# What a person chooses on the page; webhooks are for machines and stay as the tenant set them.
PAGE_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.CHAT, Channel.IN_APP)
CHANNEL_LABELS = {
    Channel.EMAIL: "Email",
    Channel.SMS: "SMS",
    Channel.PUSH: "Push",
    Channel.CHAT: "Chat",
    Channel.IN_APP: "In-app",
}
ALL = "*"  # the form's key for the all-categories layer


@dataclass(frozen=True)
class Branding:
    name: str
    logo_url: str
    color: str


def tenant_branding(tenant: Any) -> Branding:
    config = (tenant.settings or {}).get("branding") or {}
    if not isinstance(config, Mapping):
        config = {}
    logo = str(config.get("logo_url") or "")
    color = str(config.get("color") or "")
    return Branding(
        name=str(config.get("name") or tenant.name)[:200],
        logo_url=logo if logo.startswith("https://") or logo.startswith("http://") else "",
        color=color if COLOR.match(color) else "#2457d6",
    )


def frame_ancestors(tenant: Any) -> str:
    """The CSP `frame-ancestors` source list: the tenant's allowed origins, or 'none'."""
    return " ".join(tenant_allowed_origins(tenant.settings)) or "'none'"


def form_rows(centre: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per category (and one for everything else): its channels' checkboxes as they stand."""
    effective = centre["effective"]
    rows = [{"key": ALL, "name": "Everything else", "description": "", "critical": False}]
    rows += [dict(c) for c in centre["categories"]]
    for row in rows:
        merged = effective.get(row["key"], effective[ALL])
        row["channels"] = [
            {
                "channel": channel.value,
                "label": CHANNEL_LABELS[channel],
                "name": f"c:{row['key']}:{channel.value}",
                "on": True if row["critical"] else bool(merged["channels"].get(channel.value, True)),
            }
            for channel in PAGE_CHANNELS
        ]
    return rows


def general_layer(centre: Mapping[str, Any]) -> dict[str, Any]:
    return next((layer for layer in centre["preferences"] if layer["category"] is None), {})


def _time(value: str) -> time | None:
    try:
        return time.fromisoformat(value) if value else None
    except ValueError:
        return None


def layers_from_form(
    centre: Mapping[str, Any], form: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, list[str]]]:
    """The layers and profile a submitted page asks for, and form errors by field.

    Checkboxes are explicit: a box left unticked turns that channel off for this recipient. What
    the page does not show (a category's own digest or quiet hours, webhook choices) is kept.
    Critical categories' boxes are disabled on the page and never read.
    """
    errors: dict[str, list[str]] = {}
    kept = {layer["category"]: layer for layer in centre["preferences"]}
    layers: list[dict[str, Any]] = []
    keys = [None] + [c["key"] for c in centre["categories"] if not c["critical"]]
    keys += [c["key"] for c in centre["categories"] if c["critical"] and c["key"] in kept]
    critical = {c["key"] for c in centre["categories"] if c["critical"]}
    for key in keys:
        old = kept.get(key) or {}
        quiet = old.get("quiet_hours") or {}
        layer = {
            "category": key,
            "channels": dict(old.get("channels") or {}),
            "digest": old.get("digest") or "",
            "quiet_hours_start": _time(quiet.get("start", "")),
            "quiet_hours_end": _time(quiet.get("end", "")),
        }
        if key not in critical:
            name = key or ALL
            for channel in PAGE_CHANNELS:
                layer["channels"][channel.value] = form.get(f"c:{name}:{channel.value}") == "on"
        if key is None:
            digest = str(form.get("digest") or "")
            if digest not in ("", *Digest.values):
                errors["digest"] = ["Choose one of the listed frequencies."]
            layer["digest"] = digest
            start, end = str(form.get("quiet_start") or ""), str(form.get("quiet_end") or "")
            layer["quiet_hours_start"], layer["quiet_hours_end"] = _time(start), _time(end)
            if (start and layer["quiet_hours_start"] is None) or (end and layer["quiet_hours_end"] is None):
                errors["quiet_hours"] = ["Use HH:MM."]
            elif bool(start) != bool(end):
                errors["quiet_hours"] = ["Give both a start and an end, or neither."]
        layers.append(layer)
    profile = {
        "timezone": str(form.get("timezone") or "").strip(),
        "locale": str(form.get("locale") or "").strip(),
        "unsubscribed": form.get("unsubscribed") == "on",
    }
    return layers, profile, errors
