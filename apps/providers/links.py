"""The signed, expiring link to a recipient's hosted preference page, put in every email's footer.

It lives here, below the portal that serves the page, because the email composer (`email.py`) and
the one-click unsubscribe page (apps/notifications/public.py) make it too; the portal reads it.

The link is the credential (a recipient has no password): it names the tenant and the recipient,
is signed with SECRET_KEY and expires after SIGNALBOX_PREFERENCES_LINK_MAX_AGE_DAYS (default 60),
so a forwarded or leaked email opens the page for a bounded time only. It is the one place a
recipient credential travels in a URL; API recipient tokens never do.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from django.conf import settings
from django.core import signing

from apps.providers.conf import providers_settings
from apps.providers.tracking import signed_token

SALT = "signalbox.portal.preferences-link"
PLACEHOLDER = "-sbx-preferences-"


class BadLink(Exception):
    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class PreferencesLink:
    tenant_id: str
    recipient_id: int


def max_age_seconds() -> int:
    return int(providers_settings().preferences_link_max_age_days * 86400)


def preferences_url(*, tenant_id: str, recipient_id: str | int) -> str:
    """The absolute URL of the recipient's hosted preference page (PUBLIC_URL + /preferences/<token>/)."""
    token = signed_token({"t": str(tenant_id), "r": int(recipient_id)}, SALT)
    return f"{settings.PUBLIC_URL}/preferences/{token}/"


def preferences_link_read(token: str) -> PreferencesLink:
    try:
        payload = signing.loads(token, salt=SALT, max_age=max_age_seconds())
    except signing.SignatureExpired as exc:
        raise BadLink("This link has expired.", expired=True) from exc
    except signing.BadSignature as exc:
        raise BadLink("Unknown link.") from exc
    if not isinstance(payload, dict) or not payload.get("t") or not isinstance(payload.get("r"), int):
        raise BadLink("Unknown link.")
    return PreferencesLink(tenant_id=str(payload["t"]), recipient_id=int(payload["r"]))


def email_footer(*, text: str, html: str, url: str) -> tuple[str, str]:
    """The email's text and HTML with the preference-centre link appended (HTML: before </body>)."""
    line = "Manage your notification preferences"
    new_text = f"{text.rstrip()}\n\n--\n{line}: {url}\n" if text else text
    if not html:
        return new_text, html
    footer = (
        '<p style="font-size:12px;color:#666;margin-top:24px">'
        f'<a href="{escape(url, quote=True)}" style="color:#666">{line}</a></p>'
    )
    lower = html.lower()
    end = lower.rfind("</body>")
    new_html = html[:end] + footer + html[end:] if end != -1 else html + footer
    return new_text, new_html


def with_preferences_link(
    *, tenant_id: str, recipient_id: str, text: str, html: str, substitutions: dict[str, str] | None = None
) -> tuple[str, str]:
    """An email's text and HTML with the footer link to the recipient's preference page.

    With `substitutions` (a batch sharing one body) the body carries a placeholder and the
    recipient's own URL goes into `substitutions`, as the open and click links do. A message for
    no recipient (a provider test) gets no footer.
    """
    if not tenant_id or not recipient_id or not str(recipient_id).isdigit():
        return text, html
    url = preferences_url(tenant_id=tenant_id, recipient_id=recipient_id)
    if substitutions is not None:
        substitutions[PLACEHOLDER] = url
        url = PLACEHOLDER
    return email_footer(text=text, html=html, url=url)


def preferences_link_html(*, tenant_id: str, recipient_id: str) -> str:
    """A paragraph linking the one-click unsubscribe pages to the recipient's whole preference page."""
    if not tenant_id or not str(recipient_id).isdigit():
        return ""
    url = preferences_url(tenant_id=tenant_id, recipient_id=recipient_id)
    return f'<p><a href="{escape(url, quote=True)}">Manage all your notification preferences</a></p>'
