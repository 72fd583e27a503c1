"""What every email adapter sends for a `Message`: parts, headers, tracking and unsubscribe.

SMTP and SendGrid both call `compose`, so an email looks the same whichever provider carried
it: a text part (derived from the HTML when only HTML was rendered), the HTML part with
tracking applied, `Reply-To`, the message's own headers, `X-Signalbox-Delivery` (the delivery
id, which receivers and the sandbox use as the idempotency key) and, when asked for,
`List-Unsubscribe` with `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).

For a batch (SendGrid personalizations) `compose(..., placeholders=True)` leaves a
placeholder where each recipient's own tracking URL goes and returns the values separately,
so many recipients can share one body. Content rendered per recipient shares one too when its
parts carry a skeleton (`apps.notifications.rendering.RenderedText`: text and recipient values
told apart): the skeleton is the body and the recipient's values are substitutions. Not with
click tracking (a value inside a link would have to be substituted inside its signed URL), nor
for an HTML-only message (its text part is derived from the recipient's own HTML).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import parseaddr
from html import unescape

from django.utils.html import strip_tags

from apps.providers import tracking
from apps.providers.base import Message
from apps.providers.links import with_preferences_link

DELIVERY_HEADER = "X-Signalbox-Delivery"
OPEN_PLACEHOLDER = "-sbx-open-"


def click_placeholder(index: int) -> str:
    return f"-sbx-click-{index}-"


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str
    reply_to: str
    # The message's own headers: the same for every recipient of one content.
    headers: dict[str, str]
    # Headers that differ per recipient: the delivery id and the unsubscribe link.
    recipient_headers: dict[str, str]
    # Placeholder -> this recipient's value, when composed with placeholders.
    substitutions: dict[str, str] = field(default_factory=dict)

    @property
    def all_headers(self) -> dict[str, str]:
        return {**self.headers, **self.recipient_headers}

    @property
    def content_key(self) -> tuple[object, ...]:
        """What must be equal for two emails to share one body in a batch."""
        return (self.subject, self.text, self.html, self.reply_to, tuple(sorted(self.headers.items())))


# A bare address (no display name, comment or list): parseaddr would return it as it is.
BARE_ADDRESS = re.compile(r'^[^\s<>(),;:"@\[\]\\]+@[^\s<>(),;:"@\[\]\\]+$')


def address_problem(to: object) -> str:
    """Why `to` cannot be an email recipient ("" if it can): refused before any provider sees it."""
    if not isinstance(to, str) or not to.strip():
        return "The recipient has no email address."
    if BARE_ADDRESS.match(to):  # the common case, without parseaddr's cost (0.1 ms each)
        return ""
    _, address = parseaddr(to)
    if "@" not in address or any(c.isspace() for c in address) or "\n" in to or "\r" in to:
        return f"Not an email address: {to!r}."
    return ""


def text_from_html(body: str) -> str:
    """A readable text part for HTML-only messages (clients and spam filters expect one)."""
    body = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", "", body)
    body = re.sub(r"(?i)<br\s*/?>|</(p|div|h[1-6]|li|tr)\s*>", "\n", body)
    text = unescape(strip_tags(body))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _skeleton(part: str, substitutions: dict[str, str]) -> str:
    """The part's shared skeleton, its recipient values added to `substitutions`; else the part."""
    skeleton, values = getattr(part, "skeleton", None), getattr(part, "values", None)
    if not isinstance(skeleton, str) or not isinstance(values, dict):
        return part
    substitutions.update(values)
    return skeleton


def compose(message: Message, *, placeholders: bool = False) -> Email:
    delivery_id = message.idempotency_key
    substitutions: dict[str, str] = {}
    html, body_text = message.html, message.text
    if placeholders and not message.track_clicks and (message.text or not message.html):
        html, body_text = _skeleton(html, substitutions), _skeleton(body_text, substitutions)
    if html and (message.track_opens or message.track_clicks):
        pixel = tracking.open_url(delivery_id) if message.track_opens else None
        if placeholders and pixel is not None:
            substitutions[OPEN_PLACEHOLDER] = pixel
            pixel = OPEN_PLACEHOLDER

        def link(index: int, url: str) -> str:
            tracked = tracking.click_url(delivery_id, url)
            if not placeholders:
                return tracked
            substitutions[click_placeholder(index)] = tracked
            return click_placeholder(index)

        html = tracking.track_html(html, pixel=pixel, link=link if message.track_clicks else None)

    recipient_headers = {DELIVERY_HEADER: delivery_id}
    if message.list_unsubscribe and message.recipient_id:
        url = tracking.unsubscribe_url(
            tenant_id=message.tenant_id, recipient_id=message.recipient_id, category=message.category
        )
        recipient_headers["List-Unsubscribe"] = f"<{url}>"
        recipient_headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    own = {k: v for k, v in message.headers.items() if k.lower() not in {h.lower() for h in recipient_headers}}
    text = body_text or (text_from_html(message.html) if message.html else "")
    # The footer link to the recipient's preference page (apps/providers/links.py), after tracking.
    text, html = with_preferences_link(
        tenant_id=message.tenant_id,
        recipient_id=message.recipient_id,
        text=text,
        html=html,
        substitutions=substitutions if placeholders else None,
    )
    return Email(
        subject=message.subject,
        text=text,
        html=html,
        reply_to=message.reply_to,
        headers=own,
        recipient_headers=recipient_headers,
        substitutions=substitutions,
    )
