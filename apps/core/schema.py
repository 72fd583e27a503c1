"""OpenAPI helpers: the shared error component and responses, and the schema post-processing hook that
puts them on every operation and marks deprecated endpoints (apps/core/deprecation.py)."""

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

ERROR_REF = {"$ref": "#/components/schemas/Error"}
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def document_errors(result: dict[str, Any]) -> dict[str, Any]:
    """Gives every operation that documents no 4xx answer the shared `ERROR_RESPONSES`.

    Every view answers errors through one exception handler in one shape, so the schema says so
    everywhere by default; an operation that lists its own 4xx answers (e.g. a 409) keeps exactly those.
    """
    if "Error" not in result.get("components", {}).get("schemas", {}):
        return result  # a partial schema no view of which names the error shape: nothing to refer to
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            if any(str(code).startswith("4") for code in responses):
                continue
            for code, response in ERROR_RESPONSES.items():
                responses[str(code)] = {
                    "content": {"application/json": {"schema": ERROR_REF}},
                    "description": response.description,
                }
    return result


def mark_deprecated(result: dict[str, Any]) -> dict[str, Any]:
    """Marks the operations registered by `@deprecated(...)` as deprecated, with the note and sunset date."""
    from apps.core.deprecation import DEPRECATED_PATHS

    for path, methods in result.get("paths", {}).items():
        for method, operation in methods.items():
            if method not in HTTP_METHODS:
                continue
            note = DEPRECATED_PATHS.get((path, method.upper())) or DEPRECATED_PATHS.get((path, "*"))
            if note:
                operation["deprecated"] = True
                operation["description"] = (operation.get("description", "") + f"\n\n**Deprecated**: {note}").strip()
    return result


def postprocess_schema(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """The project's drf-spectacular post-processing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    return mark_deprecated(document_errors(result))
