"""Signed links Signalbox puts in emails: open pixel, click redirect and one-click unsubscribe.

Each link carries a `django.core.signing` token (a salt per purpose, so a token of one kind
is worthless as another) and points at `settings.PUBLIC_URL`:
- `/t/o/<token>.gif` records the open of a delivery;
- `/t/c/<token>` records a click and redirects to the URL inside the token, and only there;
- `/u/<token>` unsubscribes a recipient from a category (or from everything).
The endpoints are the notifications app's (apps/notifications/public.py): this app only makes links.
Tokens do not expire: an email is opened, clicked or unsubscribed from months later.

`track_html` rewrites a message's HTML: absolute http(s) links go through the click endpoint
and a 1x1 pixel is added before `</body>`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing

OPEN_SALT = "signalbox.providers.tracking.open"
CLICK_SALT = "signalbox.providers.tracking.click"
UNSUBSCRIBE_SALT = "signalbox.providers.unsubscribe"

# href="http…" / href='http…' on an <a> tag; the URL is HTML-escaped inside the attribute.
_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class BadToken(Exception):
    """The token is malformed or its signature does not check out."""


def _signer(salt: str, secret_key: str) -> signing.TimestampSigner:
    signer = _signers.get((salt, secret_key))
    if signer is None:
        signer = _signers[(salt, secret_key)] = signing.TimestampSigner(key=secret_key, salt=salt)
    return signer


_signers: dict[tuple[str, str], signing.TimestampSigner] = {}


def signed_token(payload: dict[str, Any], salt: str) -> str:
    """`django.core.signing.dumps(payload, salt=salt, compress=True)`, the same token, with the
    signer made once per salt and key rather than per token: every email of a batch signs two or
    more links, and building the signer was a third of each signature's cost."""
    return _signer(salt, settings.SECRET_KEY).sign_object(payload, compress=True)


def _dumps(payload: dict[str, Any], salt: str) -> str:
    return signed_token(payload, salt)


def _loads(token: str, salt: str) -> dict[str, Any]:
    try:
        payload = signing.loads(token, salt=salt)
    except signing.BadSignature as exc:
        raise BadToken(str(exc)) from exc
    if not isinstance(payload, dict):
        raise BadToken("Unexpected token payload.")
    return payload


def _public(path: str) -> str:
    return f"{settings.PUBLIC_URL}{path}"


# --- Opens and clicks ------------------------------------------------------------------------


def open_url(delivery_id: str) -> str:
    return _public(f"/t/o/{_dumps({'d': delivery_id}, OPEN_SALT)}.gif")


def open_token_delivery(token: str) -> str:
    return str(_loads(token, OPEN_SALT).get("d") or "")


def click_url(delivery_id: str, url: str) -> str:
    return _public(f"/t/c/{_dumps({'d': delivery_id, 'u': url}, CLICK_SALT)}")


@dataclass(frozen=True)
class Click:
    delivery_id: str
    url: str


def click_token_read(token: str) -> Click:
    payload = _loads(token, CLICK_SALT)
    url = str(payload.get("u") or "")
    if not url.lower().startswith(("http://", "https://")):
        raise BadToken("The link is not an http(s) URL.")
    return Click(delivery_id=str(payload.get("d") or ""), url=url)


def track_html(
    body: str,
    *,
    pixel: str | None,
    link: Callable[[int, str], str] | None,
) -> str:
    """The HTML with each http(s) link replaced by `link(index, url)` and `pixel` appended.

    `link` gets the link's position and its unescaped URL and returns the new URL; the
    unsubscribe link is left alone (a click there is not engagement, and it must work even
    when tracking is blocked).
    """
    if link is not None:
        index = 0

        def rewrite(match: re.Match[str]) -> str:
            nonlocal index
            url = html.unescape(match.group(3))
            if url.startswith(_public("/u/")):
                return match.group(0)
            new = link(index, url)
            index += 1
            return f"{match.group(1)}{match.group(2)}{html.escape(new, quote=True)}{match.group(2)}"

        body = _LINK.sub(rewrite, body)
    if pixel is not None:
        img = (
            f'<img src="{html.escape(pixel, quote=True)}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px" />'
        )
        ends = list(_BODY_END.finditer(body))
        body = body[: ends[-1].start()] + img + body[ends[-1].start() :] if ends else body + img
    return body


# --- Unsubscribe -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Unsubscribe:
    tenant_id: str
    recipient_id: str
    # Empty: from everything this tenant sends that may be unsubscribed from.
    category: str


def unsubscribe_url(*, tenant_id: str, recipient_id: str, category: str = "") -> str:
    token = _dumps({"t": tenant_id, "r": recipient_id, "c": category}, UNSUBSCRIBE_SALT)
    return _public(f"/u/{token}")


def unsubscribe_token_read(token: str) -> Unsubscribe:
    payload = _loads(token, UNSUBSCRIBE_SALT)
    if not payload.get("t") or not payload.get("r"):
        raise BadToken("The token names no recipient.")
    return Unsubscribe(
        tenant_id=str(payload["t"]), recipient_id=str(payload["r"]), category=str(payload.get("c") or "")
    )
