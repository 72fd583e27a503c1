"""Who may open a stream: the REST API's own checks (recipient tokens, API keys and scopes), through
the public functions of apps.notifications and apps.tenancy.

A stream is authenticated once when it opens. While it stays open, the process re-checks all of
its streams' credentials together every AUTH_RECHECK_SECONDS (`recheck`, a few queries for the
whole process, not one per stream), so a revoked key or token, or a deactivated tenant, ends them.
A token's own expiry needs no query: each stream ends on time by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rest_framework import exceptions

from apps.notifications.authentication import recipient_token_check, recipient_tokens_usable
from apps.notifications.services.inbox import TokenClaims, inbox_token_expiry
from apps.tenancy.authentication import api_key_lookup, api_keys_usable
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
    claims: TokenClaims | None = None  # a recipient token's, for the re-check
    key_id: Any = None  # an API key's, for the re-check
    scope: str = ""


def _refused(exc: exceptions.AuthenticationFailed) -> Refused:
    codes = exc.get_codes()
    return Refused(401, codes if isinstance(codes, str) else "not_authenticated", str(exc.detail))


def recipient_principal(raw: str) -> Principal:
    try:
        recipient, claims = recipient_token_check(raw)
    except exceptions.AuthenticationFailed as exc:
        raise _refused(exc) from exc
    return Principal(
        str(recipient.tenant_id),
        dict(recipient.tenant.settings or {}),
        recipient.pk,
        datetime.fromtimestamp(inbox_token_expiry(raw), tz=UTC),
        claims=claims,
    )


def key_principal(raw: str, scope: str, tenant_header: str = "") -> Principal:
    if not raw.startswith("sbx_") or "." not in raw:
        raise Refused(401, "invalid_api_key", "That is not a Signalbox API key.")
    try:
        key = api_key_lookup(raw)
    except exceptions.AuthenticationFailed as exc:
        raise _refused(exc) from exc
    if key.is_platform or key.tenant is None:
        raise Refused(403, "tenant_key_required", "Streams take a tenant's key.")
    if tenant_header and tenant_header not in (str(key.tenant_id), key.tenant.slug):
        raise Refused(403, "cross_tenant", "Only a platform key may act for another tenant.")
    if not key.has_scope(scope):
        raise Refused(403, "permission_denied", f"This key lacks the '{scope}' scope.")
    return Principal(
        str(key.tenant_id), dict(key.tenant.settings or {}), None, key.expiry_date, key_id=key.pk, scope=scope
    )


def recheck(principals: Mapping[str, Principal]) -> set[str]:
    """Of these open streams (by connection id), those whose credential no longer holds: the key
    revoked, expired, deleted or its scope gone, the token's key or generation revoked, the tenant
    deactivated. At most three queries for any number of streams."""
    tokens = {p.claims for p in principals.values() if p.claims is not None}
    still_tokens = recipient_tokens_usable(tokens) if tokens else set()
    key_ids = {p.key_id for p in principals.values() if p.key_id is not None}
    keys = api_keys_usable(ids=key_ids) if key_ids else {}
    ended: set[str] = set()
    for conn_id, p in principals.items():
        if p.claims is not None:
            if p.claims not in still_tokens:
                ended.add(conn_id)
        elif p.key_id is not None:
            key = keys.get(p.key_id)
            if key is None or not key.has_scope(p.scope):
                ended.add(conn_id)
    return ended


def origin_allowed(origin: str, principal: Principal) -> bool:
    """No Origin (a server, curl) passes; a browser's must be allowed for inbox CORS, globally
    (SIGNALBOX_INBOX_ALLOWED_ORIGINS) or by the tenant (settings["inbox"]["allowed_origins"])."""
    return not origin or origin_allowed_for(origin, principal.tenant_settings)


READ = Scope.READ.value
TASKS = Scope.TASKS_WRITE.value
