"""OpenAPI helpers: the shared error component, and deprecation notes for endpoints and fields."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

ErrorSerializer = inline_serializer(
    name="Error",
    fields={
        "code": serializers.CharField(help_text="Stable machine-readable error code."),
        "message": serializers.CharField(help_text="Human-readable explanation."),
        "fields": serializers.DictField(help_text="Per-field messages for validation errors."),
    },
)

ERROR_RESPONSES = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid input; nothing was changed."),
    401: OpenApiResponse(ErrorSerializer, description="Missing, invalid, expired or revoked API key."),
    403: OpenApiResponse(ErrorSerializer, description="The key lacks a required scope."),
    404: OpenApiResponse(ErrorSerializer, description="No such object for this tenant."),
    429: OpenApiResponse(ErrorSerializer, description="Rate limited; see Retry-After."),
}


def mark_deprecations(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Marks operations of views decorated with `@deprecated(...)` as deprecated in the schema."""
    from apps.core.deprecation import DEPRECATED_PATHS

    for path, methods in result.get("paths", {}).items():
        for method, operation in methods.items():
            note = DEPRECATED_PATHS.get((path, method.upper())) or DEPRECATED_PATHS.get((path, "*"))
            if note:
                operation["deprecated"] = True
                operation["description"] = (operation.get("description", "") + f"\n\n**Deprecated**: {note}").strip()
    return result
