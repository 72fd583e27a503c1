"""What the notifications API modules share: the write scope, URL patterns, the order of preference
layers, and the permission of the endpoints a recipient token may call (inbox, preferences)."""

from __future__ import annotations

from typing import Any

from django.db.models import F
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from apps.notifications.authentication import RecipientToken
from apps.tenancy.models import Scope
from apps.tenancy.permissions import HasTenant

WRITE = Scope.NOTIFICATIONS_WRITE
UUID_PATTERN = r"[0-9a-fA-F-]{32,36}"
EXTERNAL_ID_PATTERN = r"[^/]+"
# Preference layers listed general first: the all-categories layer, then by category key.
LAYER_ORDER = F("category__key").asc(nulls_first=True)


class InboxAccess(BasePermission):
    """A recipient token, or an API key with `read` (GET) / `notifications:write` (POST)."""

    message = "Authenticate with a recipient token or an API key."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, RecipientToken):
            return True
        checker = HasTenant()
        allowed = checker.has_permission(request, view)
        if not allowed:
            self.message, self.code = checker.message, getattr(checker, "code", None)  # type: ignore[assignment]
        return allowed
