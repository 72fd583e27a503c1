"""CORS for browser front ends, per tenant: an origin listed in any active tenant's
`settings["inbox"]["allowed_origins"]` may call the recipient endpoints (besides the global
SIGNALBOX_INBOX_ALLOWED_ORIGINS); why the union of tenants answers: apps/tenancy/origins.py.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from apps.tenancy.origins import tenant_origins


def origin_allowed(sender: Any, request: Any, **kwargs: Any) -> bool:
    """corsheaders' `check_request_enabled` receiver. corsheaders asks it for every path, so it
    checks CORS_URLS_REGEX itself: back-end endpoints stay closed to browsers."""
    origin = request.headers.get("Origin", "")
    if not origin or not re.match(settings.CORS_URLS_REGEX, request.path_info):
        return False
    return origin in tenant_origins()
