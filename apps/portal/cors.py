"""CORS for browser front ends, per tenant: an origin listed in any active tenant's
`settings["inbox"]["allowed_origins"]` may call the recipient endpoints (besides the global
SIGNALBOX_INBOX_ALLOWED_ORIGINS).

A preflight carries no credentials, so it cannot say which tenant it is for: the union of tenants'
origins answers it. That opens nothing: those endpoints still need a recipient token (or an API
key), and a token opens only its own recipient's data. The union is cached for a minute.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.cache import cache

from apps.portal.services import allowed_origins

CACHE_KEY = "signalbox:portal:tenant-origins"
CACHE_SECONDS = 60


def tenant_origins() -> frozenset[str]:
    cached = cache.get(CACHE_KEY)
    if cached is not None:
        return frozenset(cached)
    from apps.tenancy.models import Tenant

    origins: set[str] = set()
    for tenant in Tenant.objects.filter(is_active=True, settings__has_key="inbox").only("settings", "name"):
        origins.update(allowed_origins(tenant))
    cache.set(CACHE_KEY, sorted(origins), CACHE_SECONDS)
    return frozenset(origins)


def origin_allowed(sender: Any, request: Any, **kwargs: Any) -> bool:
    """corsheaders' `check_request_enabled` receiver. corsheaders asks it for every path, so it
    checks CORS_URLS_REGEX itself: back-end endpoints stay closed to browsers."""
    origin = request.headers.get("Origin", "")
    if not origin or not re.match(settings.CORS_URLS_REGEX, request.path_info):
        return False
    return origin in tenant_origins()
