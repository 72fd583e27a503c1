"""Rendering a notification for one recipient on one channel, as fan-out and sends need it.

A `NotificationRenderer` is made once per notification per task: content that does not use
`recipient` is rendered once per locale and channel and shared by every recipient of that
locale; content that does is rendered per recipient (from templates compiled once).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from apps.notifications import rendering
from apps.notifications.models import Notification
from apps.providers.base import Channel

RECIPIENT_CONTEXT_FIELDS = ("external_id", "name", "email", "phone", "locale", "timezone", "data")


def recipient_context(recipient: Any) -> dict[str, Any]:
    """What templates see as `recipient`. Fan-out loads only the fields its templates read
    (`recipient_fields_read`): one it did not load is None here, and no template reads it."""
    context = {name: getattr(recipient, name, None) for name in RECIPIENT_CONTEXT_FIELDS}
    context["timezone"] = context["timezone"] or "UTC"
    context["data"] = context["data"] or {}
    return context


def notification_content(notification: Notification) -> Mapping[str, Any]:
    """The notification's content by locale and channel: its template version's, or its own."""
    if notification.template_version is not None:
        return notification.template_version.content
    return notification.content or {}


def recipient_fields_read(notification: Notification) -> tuple[str, ...]:
    """The RECIPIENT_CONTEXT_FIELDS this notification's templates read (all of them when one
    uses `recipient` as a whole, or reads a name that is not a field, such as `items()`)."""
    read = rendering.recipient_attributes_read(notification_content(notification))
    if read is None or not read <= set(RECIPIENT_CONTEXT_FIELDS):
        return RECIPIENT_CONTEXT_FIELDS
    return tuple(name for name in RECIPIENT_CONTEXT_FIELDS if name in read)


class NotificationRenderer:
    def __init__(self, notification: Notification, *, default_locale: str = "") -> None:
        self.notification = notification
        self.content: Mapping[str, Any] = notification_content(notification)
        self.default_locale = default_locale
        self._shared: dict[tuple[str, str], dict[str, Any]] = {}
        self._per_recipient: dict[tuple[str, str], bool] = {}
        self._resolved: dict[tuple[str, str], tuple[str, dict[str, Any]] | None] = {}

    def _fields(self, channel: str, locale: str) -> tuple[str, dict[str, Any]]:
        key = (channel, locale)
        if key not in self._resolved:  # a few locales per notification: resolve each once
            self._resolved[key] = rendering.channel_content(self.content, channel, locale)
        found = self._resolved[key]
        if found is None:
            raise rendering.RenderError(f"No content for channel {channel!r}.")
        return found

    def render(self, channel: str, recipient: Any) -> dict[str, Any]:
        """`{"locale": used, "content": {field: text}}`; raises RenderError."""
        locale = recipient.locale or self.default_locale
        used, fields = self._fields(channel, locale)
        key = (channel, used)
        if key not in self._per_recipient:
            self._per_recipient[key] = rendering.uses_recipient(channel, fields)
        if not self._per_recipient[key]:
            if key not in self._shared:
                self._shared[key] = _one_line_subject(
                    channel, rendering.render_fields(channel, fields, self.notification.payload)
                )
            return {"locale": used, "content": self._shared[key]}
        context = {**self.notification.payload, rendering.RECIPIENT_VARIABLE: recipient_context(recipient)}
        return {
            "locale": used,
            "content": _one_line_subject(channel, rendering.render_fields(channel, fields, context)),
        }


def _one_line_subject(channel: str, content: dict[str, Any]) -> dict[str, Any]:
    """Refuses an email subject that rendered with a line break (a payload value carrying CRLF):
    a permanent render error now, rather than a header injection refused on every retry."""
    subject = content.get("subject") if channel == Channel.EMAIL else None
    if isinstance(subject, str) and ("\r" in subject or "\n" in subject):
        raise rendering.RenderError("The email subject contains a line break; a subject is one line.")
    return content


def message_metadata(notification: Notification, *, delivery_id: str, attempt: int) -> dict[str, Any]:
    """What every adapter gets in `Message.metadata` (providers may pass it on as tags)."""
    return {
        "notification_id": str(notification.pk),
        "delivery_id": delivery_id,
        "attempt": attempt,
        "category": notification.category.key if notification.category_id else "",
        "template": notification.template.key if notification.template_id and notification.template else "",
        "template_version": notification.template_version.version if notification.template_version else None,
        "priority": notification.priority,
        "notification_metadata": notification.metadata or {},
    }


HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# Headers the composer sets itself, or that would redirect the mail: never taken from settings.
RESERVED_HEADERS = {
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "sender",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


def _address_or_blank(value: Any) -> str:
    try:
        validate_email(value)
    except ValidationError:
        return ""
    return str(value)


def email_options(notification: Notification) -> dict[str, Any]:
    """What a notification's emails carry besides their content (`Message` fields), from
    `Tenant.settings["email"]`: one-click `List-Unsubscribe` (on unless `list_unsubscribe` is
    false; never for a critical category, which cannot be opted out of), open and click tracking
    (`track_opens`, `track_clicks`, off by default), `reply_to` (an address, else ignored), and
    extra `headers` (names and values on one line; the composer's own headers cannot be
    overridden)."""
    config = (notification.tenant.settings or {}).get("email") or {}
    category = notification.category
    headers = {
        str(name): str(value)
        for name, value in dict(config.get("headers") or {}).items()
        if HEADER_NAME.match(str(name))
        and str(name).lower() not in RESERVED_HEADERS
        and not re.search(r"[\r\n]", str(value))
    }
    return {
        "category": category.key,
        "list_unsubscribe": bool(config.get("list_unsubscribe", True)) and not category.critical,
        "track_opens": bool(config.get("track_opens", False)),
        "track_clicks": bool(config.get("track_clicks", False)),
        "reply_to": _address_or_blank(config.get("reply_to")),
        "headers": headers,
    }
