"""Permissions: a request must act for a tenant, and hold the scope its method needs.

A view names the scope for writes in `write_scope`; reads need `read`. Platform keys hold
every scope but still need `X-Tenant-ID` for tenant data.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from apps.tenancy.models import ApiKey, Scope


def required_scope(request: Request, view: Any) -> str:
    if request.method in SAFE_METHODS:
        return getattr(view, "read_scope", Scope.READ)
    return getattr(view, "write_scope", Scope.ALL)


class HasTenant(BasePermission):
    message = "Authenticate with an API key (a platform key must name a tenant in X-Tenant-ID)."

    def has_permission(self, request: Request, view: Any) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            return False
        if getattr(request, "tenant", None) is None:
            self.message = "A platform key must name the tenant in the X-Tenant-ID header."
            self.code = "tenant_required"
            return False
        scope = required_scope(request, view)
        if not key.has_scope(scope):
            self.message = f"This key lacks the {scope!r} scope."
            self.code = "missing_scope"
            return False
        return True
