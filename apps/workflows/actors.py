"""Who acts on a workflow: an API key (with its scopes) or a staff user, as stored in intents and the log."""

from __future__ import annotations

from typing import Any

from apps.tenancy.models import ApiKey, Scope


def actor_from_request(request: Any) -> dict[str, Any]:
    key = getattr(request, "auth", None)
    if isinstance(key, ApiKey):
        return {
            "type": "platform_key" if key.is_platform else "api_key",
            "id": key.prefix,
            "name": key.name,
            "scopes": [Scope.ALL.value] if key.is_platform else list(key.scopes),
        }
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_staff", False):
        return {"type": "staff", "id": user.get_username(), "name": user.get_username(), "scopes": [Scope.ALL.value]}
    return {"type": "system", "id": "signalbox", "name": "Signalbox", "scopes": [Scope.ALL.value]}


def actor_has_scope(actor: dict[str, Any], scope: str) -> bool:
    """ApiKey.has_scope for a stored actor."""
    scopes = actor.get("scopes") or []
    if Scope.ALL.value in scopes:
        return True
    if scope == Scope.READ.value:
        return bool(scopes)
    return scope in scopes


def missing_scopes(actor: dict[str, Any], required: tuple[str, ...]) -> list[str]:
    return [s for s in required if not actor_has_scope(actor, s)]
