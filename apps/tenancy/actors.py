"""The `Actor` (apps/core/actors.py) behind a request: its API key, else its signed-in staff user.

Views and admin actions call `actor_from_request` once and hand the actor to services, which never
read the request themselves.
"""

from __future__ import annotations

from typing import Any

from apps.core.actors import Actor
from apps.tenancy.models import ApiKey, Scope


def actor_from_request(request: Any) -> Actor:
    """A DRF or Django request's actor: its key (a platform key acts with every scope), else its
    authenticated user as `staff` (every scope if staff), else `anonymous`."""
    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey):
        if key.is_platform:
            return Actor(kind="platform_key", id=key.prefix, name=key.name, scopes=(Scope.ALL.value,))
        return Actor(kind="api_key", id=key.prefix, name=key.name, scopes=tuple(key.scopes))
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_authenticated", False):
        username = str(user.get_username() if hasattr(user, "get_username") else user)
        return Actor(
            kind="staff",
            id=username,
            name=username,
            scopes=(Scope.ALL.value,) if getattr(user, "is_staff", False) else (),
        )
    return Actor(kind="anonymous")
