"""Which browser origins a tenant lets call the recipient-facing endpoints (inbox, preferences, streams).

One place for `Tenant.settings["inbox"]["allowed_origins"]` (e.g. `["https://app.acme.com"]`), read by
the API's CORS (apps/portal/cors.py), the hosted pages' `frame-ancestors` and the realtime streams.
Besides these, `SIGNALBOX_INBOX_ALLOWED_ORIGINS` (CORS_ALLOWED_ORIGINS) allows an origin for every tenant.

A CORS preflight carries no credentials, so it cannot say which tenant it is for: the union of the
tenants' origins answers it (`any_tenant_allows`, cached for a minute). That opens nothing: the request
that follows still needs a token or key, and is checked against its own tenant's origins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.cache import cache

from apps.tenancy.models import Tenant

ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d{1,5})?$")
CACHE_KEY = "signalbox:tenancy:tenant-origins"
CACHE_SECONDS = 60


def tenant_allowed_origins(tenant_settings: Mapping[str, Any] | None) -> list[str]:
    """The well-formed origins a tenant's settings allow (`scheme://host[:port]`, no path)."""
    config = (tenant_settings or {}).get("inbox") or {}
    origins = config.get("allowed_origins") if isinstance(config, Mapping) else None
    return [o.rstrip("/") for o in origins or [] if isinstance(o, str) and ORIGIN.match(o.rstrip("/"))]


def origin_allowed_for(origin: str, tenant_settings: Mapping[str, Any] | None) -> bool:
    """Whether a browser at `origin` may call this tenant's recipient endpoints."""
    return origin in settings.CORS_ALLOWED_ORIGINS or origin in tenant_allowed_origins(tenant_settings)


def tenant_origins() -> frozenset[str]:
    """Every origin some active tenant allows (cached for CACHE_SECONDS)."""
    cached = cache.get(CACHE_KEY)
    if cached is not None:
        return frozenset(cached)

    origins: set[str] = set()
    for tenant in Tenant.objects.filter(is_active=True, settings__has_key="inbox").only("settings"):
        origins.update(tenant_allowed_origins(tenant.settings))
    cache.set(CACHE_KEY, sorted(origins), CACHE_SECONDS)
    return frozenset(origins)


def any_tenant_allows(origin: str) -> bool:
    """For a preflight: whether the origin is allowed globally or by some tenant."""
    return origin in settings.CORS_ALLOWED_ORIGINS or origin in tenant_origins()
