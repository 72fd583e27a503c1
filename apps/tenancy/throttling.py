"""Per-key request rate limit; DRF answers 429 with Retry-After when it is exceeded."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from apps.tenancy.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if isinstance(request.auth, ApiKey):
            return f"throttle:key:{request.auth.prefix}"
        return f"throttle:ip:{self.get_ident(request)}"
