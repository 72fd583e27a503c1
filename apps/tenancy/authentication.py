"""`Authorization: Bearer sbx_…` authentication, resolving the tenant the request acts for."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable
from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.core import context
from apps.core.actors import Actor
from apps.observability.audit import audit_record
from apps.tenancy import credentials
from apps.tenancy.models import KEY_PREFIX, ApiKey, Tenant


def api_key_refusal(key: ApiKey) -> exceptions.AuthenticationFailed | None:
    """Why a known key may no longer be used (revoked, expired, tenant deactivated); None when usable."""
    if key.revoked:
        return exceptions.AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
    if key.has_expired:
        return exceptions.AuthenticationFailed("This API key has expired.", code="expired_api_key")
    if key.tenant is not None and not key.tenant.is_active:
        return exceptions.AuthenticationFailed("This tenant is deactivated.", code="tenant_inactive")
    return None


def api_key_lookup(raw: str) -> ApiKey:
    """The usable key behind a raw `sbx_…` secret (one query); raises AuthenticationFailed.
    Public for other transports (the realtime streams) that authenticate like the REST API."""
    prefix = raw.partition(".")[0]
    # The prefix is unique: no ORDER BY (`first()` would sort by the model's ordering).
    key = next(iter(ApiKey.objects.select_related("tenant").filter(prefix=prefix).order_by()[:1]), None)
    if key is None or not key.is_valid(raw):
        raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
    refusal = api_key_refusal(key)
    if refusal is not None:
        raise refusal
    return key


def api_keys_usable(*, ids: Iterable[Any]) -> dict[Any, ApiKey]:
    """Of these key ids, the keys still usable, in one query: what a long-lived connection
    authenticated once re-checks in bulk (revoked, expired, deleted or tenant deactivated drop out)."""
    keys = ApiKey.objects.select_related("tenant").filter(pk__in=list(ids))
    return {key.pk: key for key in keys if api_key_refusal(key) is None}


class ApiKeyUser:
    """The principal behind a key. Not a Django user: keys carry scopes, not permissions."""

    is_authenticated = True
    is_anonymous = False
    is_active = True

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.is_staff = key.is_platform
        self.pk = key.pk
        self.username = f"apikey:{key.prefix}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Use 'Authorization: Bearer <api key>'.", code="malformed_credentials"
            )
        raw = parts[1].decode("ascii", errors="replace")
        if not raw.startswith(KEY_PREFIX) or "." not in raw:
            raise exceptions.AuthenticationFailed("That is not a Signalbox API key.", code="invalid_api_key")
        key = self._usable_key(raw, request)
        key.touch()
        tenant = self._tenant_for(key, request)
        request.tenant = tenant  # type: ignore[attr-defined]
        if tenant is not None:
            # Bound for the rest of the request: logs and the tasks it publishes carry the tenant.
            context.replace({**context.current(), "tenant": str(tenant.pk)})
        return ApiKeyUser(key), key

    @staticmethod
    def _usable_key(raw: str, request: Request) -> ApiKey:
        """From this process's cache while the credentials generation holds (apps/tenancy/credentials.py),
        else from the database; the generation is read in the rate limit's round trip to Redis."""
        generation = credentials.admit(request, raw.partition(".")[0])
        key = credentials.cached_key(raw, generation)
        try:
            if key is None:
                key = api_key_lookup(raw)
                credentials.cache_key(raw, key, generation)
            else:
                refusal = api_key_refusal(key)  # expiry is a matter of time, not of a write
                if refusal is not None:
                    raise refusal
        except exceptions.AuthenticationFailed:
            credentials.uncount(request)
            raise
        return key

    @staticmethod
    def _tenant_for(key: ApiKey, request: Request) -> Tenant | None:
        requested = request.headers.get("X-Tenant-ID", "").strip()
        if not key.is_platform:
            if requested and requested not in (str(key.tenant_id), key.tenant.slug if key.tenant else ""):
                raise exceptions.PermissionDenied(
                    "Only a platform key may act for another tenant.", code="cross_tenant"
                )
            return key.tenant
        if not requested:
            return None
        lookup: dict[str, Any] = {"slug": requested}
        with contextlib.suppress(ValueError):
            lookup = {"pk": uuid.UUID(requested)}
        tenant = Tenant.objects.filter(is_active=True, **lookup).first()
        if tenant is None:
            raise exceptions.NotFound("No such tenant.", code="tenant_not_found")
        # The escape hatch leaves a trace in the tenant's own audit log, reads included.
        audit_record(
            action="platform_key.acted_for_tenant",
            tenant=tenant,
            actor=Actor(kind="platform_key", id=key.prefix),
            target=key,
            data={"method": request.method, "path": request.path[:500]},
        )
        return tenant

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="signalbox"'
