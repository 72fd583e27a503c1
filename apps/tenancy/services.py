"""Writes for tenants and keys: create, rotate, update, revoke. Creating and rotating return the new
key once, in clear; every change to a key is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from django.db import transaction
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict, Unprocessable
from apps.observability.audit import audit_record
from apps.tenancy.credentials import credentials_changed
from apps.tenancy.models import ApiKey, Scope, Tenant

VALID_SCOPES = {s.value for s in Scope}


def tenant_create(*, slug: str, name: str = "") -> Tenant:
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict(f"A tenant with slug {slug!r} exists.", code="tenant_exists")
    return Tenant.objects.create(slug=slug, name=name or slug)


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - VALID_SCOPES)
    if unknown:
        raise ApplicationError(
            f"Unknown scopes: {', '.join(unknown)}.",
            code="invalid_scope",
            fields={"scopes": [f"Choose from {sorted(VALID_SCOPES)}."]},
        )
    return sorted(set(scopes))


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant | None,
    name: str,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    platform: bool = False,
    created_by: str = "",
    actor: Actor = SYSTEM,
) -> tuple[ApiKey, str]:
    """Creates a key; the clear key is returned here and never again. `actor` is who asked (audit log)."""
    if platform == (tenant is not None):
        raise ApplicationError("A key belongs to a tenant, or is a platform key; not both.", code="invalid_key")
    if expires_at is not None and expires_at <= timezone.now():
        raise Unprocessable("Expiry must be in the future.", code="invalid_expiry", fields={"expires_at": ["past"]})
    key, clear = ApiKey.objects.create_key(
        tenant=tenant,
        name=name,
        scopes=_check_scopes(scopes if scopes is not None else [Scope.ALL]),
        expiry_date=expires_at,
        is_platform=platform,
        created_by=created_by,
    )
    key = cast(ApiKey, key)
    audit_record(action="api_key.created", tenant=tenant, actor=actor, target=key, data=_key_facts(key))
    return key, clear


def _key_facts(key: ApiKey) -> dict[str, object]:
    """What the audit log keeps about a key: never the key itself."""
    expires_at = key.expiry_date.isoformat() if key.expiry_date else None
    return {"prefix": key.prefix, "name": key.name, "scopes": key.scopes, "expires_at": expires_at}


@transaction.atomic
def api_key_rotate(
    *, key: ApiKey, old_key_expires_at: datetime, created_by: str = "", actor: Actor = SYSTEM
) -> tuple[ApiKey, str]:
    """Issues a replacement with the same scopes; the old key keeps working until the chosen expiry."""
    if not key.is_usable:
        raise Conflict("Only a usable key can be rotated.", code="key_not_usable")
    new_key, clear = ApiKey.objects.create_key(
        tenant=key.tenant,
        name=key.name,
        scopes=key.scopes,
        expiry_date=None,
        is_platform=key.is_platform,
        rotated_from=key,
        created_by=created_by,
    )
    old_expires_at = max(old_key_expires_at, timezone.now())
    ApiKey.objects.filter(pk=key.pk).update(expiry_date=old_expires_at)
    credentials_changed()
    new_key = cast(ApiKey, new_key)
    audit_record(
        action="api_key.rotated",
        tenant=key.tenant,
        actor=actor,
        target=key,
        data={**_key_facts(key), "new_prefix": new_key.prefix, "old_key_expires_at": old_expires_at.isoformat()},
    )
    return new_key, clear


UPDATABLE_KEY_FIELDS = ("name", "scopes", "expiry_date")


@transaction.atomic
def api_key_update(*, key: ApiKey, actor: Actor = SYSTEM, **changes: Any) -> ApiKey:
    """Changes a key's name, scopes or expiry (Django admin); records what changed, old and new.

    Not its owner (tenant, platform) nor `revoked`: revoking is `api_key_revoke`, and final.
    """
    unknown = sorted(set(changes) - set(UPDATABLE_KEY_FIELDS))
    if unknown:
        raise ApplicationError(f"Cannot change {', '.join(unknown)} of a key.", code="invalid_key")
    if "scopes" in changes:
        changes["scopes"] = _check_scopes(changes["scopes"])
    before = ApiKey.objects.select_for_update().get(pk=key.pk)
    changed = {name: value for name, value in changes.items() if getattr(before, name) != value}
    if not changed:
        return before
    ApiKey.objects.filter(pk=key.pk).update(**changed)
    credentials_changed()
    for name, value in changed.items():
        setattr(key, name, value)
    audit_record(
        action="api_key.updated",
        tenant=key.tenant,
        actor=actor,
        target=key,
        data={
            "prefix": key.prefix,
            "changes": {name: [_jsonable(getattr(before, name)), _jsonable(v)] for name, v in changed.items()},
        },
    )
    return key


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Actor = SYSTEM) -> ApiKey:
    """Revokes a key (at once, for every request after this one); revoking twice records nothing new."""
    if ApiKey.objects.filter(pk=key.pk, revoked=False).update(revoked=True) == 1:
        credentials_changed()
        audit_record(action="api_key.revoked", tenant=key.tenant, actor=actor, target=key, data=_key_facts(key))
    key.revoked = True
    return key
