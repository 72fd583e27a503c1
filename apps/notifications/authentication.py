"""`Authorization: Recipient <token>`: the in-app inbox for browsers and apps, without the tenant key.

The tenant's back end mints the token (`POST /api/v1/recipients/<external_id>/inbox-token/`); a
front end sends it in the header, or as `?token=` where headers cannot be set (EventSource).
The token opens one recipient's inbox and nothing else: every other endpoint still requires an
API key, and inbox views refuse to act for a different recipient. Every request checks, in the one
query that loads the recipient (no cache), that the key that minted the token is still usable and
the recipient's tokens were not revoked since (docs/security.md, "Inbox tokens").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.core import context
from apps.notifications.models import Recipient
from apps.notifications.services.inbox import InvalidToken, TokenClaims, inbox_token_read
from apps.tenancy.models import ApiKey


class RecipientPrincipal:
    """The user behind a recipient token (not a Django user)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False

    def __init__(self, recipient: Recipient) -> None:
        self.recipient = recipient
        self.pk = None
        self.username = f"recipient:{recipient.external_id}"

    def __str__(self) -> str:
        return self.username


class RecipientToken:
    """`request.auth` for a recipient token; carries the recipient it is for."""

    def __init__(self, recipient: Recipient) -> None:
        self.recipient = recipient


class RecipientTokenAuthentication(BaseAuthentication):
    keyword = "Recipient"

    def authenticate(self, request: Request) -> tuple[RecipientPrincipal, RecipientToken] | None:
        parts = get_authorization_header(request).split()
        if parts and parts[0].lower() == self.keyword.lower().encode():
            if len(parts) != 2:
                raise exceptions.AuthenticationFailed(
                    "Use 'Authorization: Recipient <token>'.", code="malformed_credentials"
                )
            raw = parts[1].decode("ascii", errors="replace")
        elif not parts and request.query_params.get("token"):
            raw = request.query_params["token"]
        else:
            return None
        recipient, _ = recipient_token_check(raw)
        request.tenant = recipient.tenant  # type: ignore[attr-defined]
        context.replace({**context.current(), "tenant": str(recipient.tenant_id)})
        return RecipientPrincipal(recipient), RecipientToken(recipient)

    def authenticate_header(self, request: Request) -> str:
        return 'Recipient realm="signalbox-inbox"'


def recipient_token_check(raw: str) -> tuple[Recipient, TokenClaims]:
    """The recipient a raw token opens and its claims, checked as on every request (one query);
    raises AuthenticationFailed. Public for the realtime streams, which authenticate alike."""
    try:
        claims = inbox_token_read(raw)
    except InvalidToken as exc:
        raise exceptions.AuthenticationFailed(str(exc), code="invalid_recipient_token") from exc
    recipient = _holder(claims)
    if recipient is None or not recipient.tenant.is_active:
        raise exceptions.AuthenticationFailed("The recipient token is invalid.", code="invalid_recipient_token")
    if not recipient.minting_key_usable or recipient.inbox_token_generation != claims.generation:  # type: ignore[attr-defined]
        raise exceptions.AuthenticationFailed("The recipient token has been revoked.", code="revoked_recipient_token")
    return recipient, claims


def recipient_tokens_usable(claims: Iterable[TokenClaims]) -> set[TokenClaims]:
    """Of these already-read tokens, those still usable (the rule of `recipient_token_check`, for
    many at once in two queries): a long-lived connection re-checks its token this way in bulk.
    Expiry is the caller's (it is in the token, not the database)."""
    wanted = set(claims)
    if not wanted:
        return set()
    recipients = {
        pk: (str(tenant_id), generation)
        for pk, tenant_id, generation in Recipient.objects.filter(
            pk__in={c.recipient_pk for c in wanted}, tenant__is_active=True
        ).values_list("pk", "tenant_id", "inbox_token_generation")
    }
    keys = ApiKey.objects.filter(
        Q(expiry_date__isnull=True) | Q(expiry_date__gt=timezone.now()),
        prefix__in={c.key_prefix for c in wanted},
        revoked=False,
    ).values_list("prefix", "tenant_id", "is_platform")
    minted_by = {(prefix, "*" if platform else str(tenant_id)) for prefix, tenant_id, platform in keys}
    return {
        c
        for c in wanted
        if recipients.get(c.recipient_pk) == (c.tenant_id, c.generation)
        and ((c.key_prefix, c.tenant_id) in minted_by or (c.key_prefix, "*") in minted_by)
    }


def _holder(claims: TokenClaims) -> Recipient | None:
    """The token's recipient, annotated with whether the key that minted it is still usable (one query)."""
    minting_key = ApiKey.objects.filter(
        Q(tenant_id=OuterRef("tenant_id")) | Q(is_platform=True),
        Q(expiry_date__isnull=True) | Q(expiry_date__gt=timezone.now()),
        prefix=claims.key_prefix,
        revoked=False,
    )
    return (
        Recipient.objects.select_related("tenant")
        .annotate(minting_key_usable=Exists(minting_key))
        .filter(pk=claims.recipient_pk, tenant_id=claims.tenant_id)
        .first()
    )


def recipient_of(request: Request) -> Recipient | None:
    auth: Any = request.auth
    return auth.recipient if isinstance(auth, RecipientToken) else None
