"""Who may open a stream: the REST API's own checks, reused (recipient tokens, API keys and scopes).

Each check is a plain sync function run again every AUTH_RECHECK_SECONDS while the stream is
open, so a revoked key or token, or a deactivated tenant, ends the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from rest_framework import exceptions

from apps.notifications.authentication import _holder
from apps.notifications.services.inbox import InvalidToken, inbox_token_read
from apps.tenancy.authentication import ApiKeyAuthentication
from apps.tenancy.models import Scope
from apps.tenancy.origins import origin_allowed_for


class Refused(Exception):
    """A stream may not open (or go on): `status` for SSE, `code` for WebSocket close."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int:
        return {401: 4001, 403: 4003, 404: 4004, 429: 4029, 503: 1013}.get(self.status, 4000)


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    tenant_settings: dict[str, Any]
    recipient_pk: int | None  # a recipient token's recipient; None for an API key
    expires_at: datetime | None


def recipient_principal(raw: str) -> Principal:
    try:
        claims = inbox_token_read(raw)
    except InvalidToken as exc:
        raise Refused(401, "invalid_recipient_token", str(exc)) from exc
    recipient = _holder(claims)
    if recipient is None or not recipient.tenant.is_active:
        raise Refused(401, "invalid_recipient_token", "The recipient token is invalid.")
    if not recipient.minting_key_usable or recipient.inbox_token_generation != claims.generation:  # type: ignore[attr-defined]
        raise Refused(401, "revoked_recipient_token", "The recipient token has been revoked.")
    from django.core import signing

    from apps.notifications.services.inbox import TOKEN_SALT

    expires = datetime.fromtimestamp(int(signing.loads(raw, salt=TOKEN_SALT)["x"]), tz=timezone.get_current_timezone())
    return Principal(str(recipient.tenant_id), dict(recipient.tenant.settings or {}), recipient.pk, expires)


def key_principal(raw: str, scope: str, tenant_header: str = "") -> Principal:
    if not raw.startswith("sbx_") or "." not in raw:
        raise Refused(401, "invalid_api_key", "That is not a Signalbox API key.")
    try:
        key = ApiKeyAuthentication._lookup(raw)
    except exceptions.AuthenticationFailed as exc:
        raise Refused(401, str(exc.get_codes()), str(exc.detail)) from exc
    if key.is_platform or key.tenant is None:
        raise Refused(403, "tenant_key_required", "Streams take a tenant's key.")
    if tenant_header and tenant_header not in (str(key.tenant_id), key.tenant.slug):
        raise Refused(403, "cross_tenant", "Only a platform key may act for another tenant.")
    if not key.has_scope(scope):
        raise Refused(403, "permission_denied", f"This key lacks the '{scope}' scope.")
    return Principal(str(key.tenant_id), dict(key.tenant.settings or {}), None, key.expiry_date)


def origin_allowed(origin: str, principal: Principal) -> bool:
    """No Origin (a server, curl) passes; a browser's must be allowed for inbox CORS, globally
    (SIGNALBOX_INBOX_ALLOWED_ORIGINS) or by the tenant (settings["inbox"]["allowed_origins"])."""
    return not origin or origin_allowed_for(origin, principal.tenant_settings)


READ = Scope.READ.value
TASKS = Scope.TASKS_WRITE.value
