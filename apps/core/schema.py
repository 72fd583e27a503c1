"""OpenAPI helpers: the shared error component and responses, and the schema post-processing hook that
puts them on every operation and marks deprecated endpoints (apps/core/deprecation.py)."""

from __future__ import annotations

import re
import typing
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.urls import Resolver404, resolve
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers

from apps.core.deprecation import DEPRECATED_PATHS
from apps.core.idempotency import honours_idempotency_key

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
    """Gives every operation the shared `ERROR_RESPONSES`, so no view needs to list them.

    Every view answers errors through one exception handler in one shape, so the schema says so
    everywhere; an answer a view documents itself (a 409, a 400 with examples) is kept as it is.
    """
    if "Error" not in result.get("components", {}).get("schemas", {}):
        return result  # a partial schema no view of which names the error shape: nothing to refer to
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            for code, response in ERROR_RESPONSES.items():
                responses.setdefault(
                    str(code),
                    {"content": {"application/json": {"schema": ERROR_REF}}, "description": response.description},
                )
    return result


def mark_deprecated(result: dict[str, Any]) -> dict[str, Any]:
    """Marks the operations registered by `@deprecated(...)` as deprecated, with the note and sunset date."""
    for path, methods in result.get("paths", {}).items():
        for method, operation in methods.items():
            if method not in HTTP_METHODS:
                continue
            note = DEPRECATED_PATHS.get((path, method.upper())) or DEPRECATED_PATHS.get((path, "*"))
            if note:
                operation["deprecated"] = True
                operation["description"] = (operation.get("description", "") + f"\n\n**Deprecated**: {note}").strip()
    return result


IDEMPOTENCY_KEY_PARAMETER = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Makes a retry safe: the same key with the same body within 24 hours answers the first "
    "answer again (with `Idempotent-Replayed: true`) and creates nothing; with another body, 422 "
    "`idempotency_key_reused`.",
}
# Values tried for each `{parameter}` of a schema path to find its view (any one that the URL matches).
_SAMPLE_VALUES = ("x", "00000000-0000-0000-0000-000000000000", "1")


def _post_handler(path: str) -> Any:
    """The view method that answers `POST path` (a schema path with `{parameters}`), or None."""
    for sample in _SAMPLE_VALUES:
        try:
            match = resolve(re.sub(r"\{[^}]+\}", sample, path))
        except Resolver404:
            continue
        view = getattr(match.func, "cls", None) or getattr(match.func, "view_class", None)
        actions = getattr(match.func, "actions", None) or {}
        handler = getattr(view, actions.get("post", "post"), None)
        if handler is not None:  # else a sample matched something else (a catch-all): try the next
            return handler
    return None


def document_idempotency(result: dict[str, Any]) -> dict[str, Any]:
    """Documents `Idempotency-Key` on every POST whose view method honours it (`apps/core/idempotency.py`).

    The view's marker is the one list: a POST decorated with `@idempotent_create` (or marked
    `@accepts_idempotency_key`) gets the header and the 422 `idempotency_key_reused`, and no other does.
    """
    for path, methods in result.get("paths", {}).items():
        operation = methods.get("post")
        if operation is None or not honours_idempotency_key(_post_handler(path)):
            continue
        parameters = operation.setdefault("parameters", [])
        parameters[:] = [p for p in parameters if not (p.get("in") == "header" and p.get("name") == "Idempotency-Key")]
        parameters.append(dict(IDEMPOTENCY_KEY_PARAMETER))
        responses = operation.setdefault("responses", {})
        if "422" not in responses:
            responses["422"] = {
                "content": {"application/json": {"schema": ERROR_REF}},
                "description": "`idempotency_key_reused`: this Idempotency-Key came with another body.",
            }
    return result


# Answers any operation can give, whatever it declares itself: authentication, scopes, a missing object
# or path, the rate limit, and content negotiation (the API speaks JSON only, both ways).
PROTOCOL_ERRORS = {
    **{code: response.description for code, response in ERROR_RESPONSES.items()},
    406: "The Accept header names no type the API answers (it answers application/json).",
    422: "Well formed, but refused by a rule the schema cannot express (see `code`).",
}
# Answers any operation with a request body can give, before its view reads it (apps/core/parsers.py).
BODY_ERRORS = {
    413: "The request body is larger than the limit (`too_large`, `fields.limit_bytes`).",
    415: "The request body is not application/json.",
}

# An action on one object (`POST /api/v1/<things>/{id}/<action>/`): refused with 409 when the object is
# not in a state that allows it (replaying an event that did not fail, cancelling a finished task).
ACTION_PATH = re.compile(r"/\{[^}]+\}/[a-z][a-z-]*/$")
ACTION_CONFLICT = "The object is not in a state that allows this action (see `code`)."


def document_protocol_errors(result: dict[str, Any]) -> dict[str, Any]:
    """Documents on every operation the JSON errors that the stack gives before or around its view.

    `document_errors` gives an operation that declares no 4xx the shared ones; one that declares its own
    (a 409) could still answer 401, 404 or 429, and any could answer 406 or, with a body, 413 or 415; an
    action on one object can answer 409. The schema says so, each in the `Error` shape. A response the view
    documents itself is kept as it is.
    """
    if "Error" not in result.get("components", {}).get("schemas", {}):
        return result
    for path, methods in result.get("paths", {}).items():
        for method, operation in methods.items():
            if method not in HTTP_METHODS:
                continue
            responses = operation.setdefault("responses", {})
            errors = {**PROTOCOL_ERRORS, **(BODY_ERRORS if "requestBody" in operation else {})}
            if method == "post" and ACTION_PATH.search(path):
                errors[409] = ACTION_CONFLICT
            for code, description in errors.items():
                responses.setdefault(
                    str(code), {"content": {"application/json": {"schema": ERROR_REF}}, "description": description}
                )
    return result


def _source_is_nullable(field: serializers.Field) -> bool:
    """Whether the model attribute a serializer field reads (`source`, dotted through relations) can be null."""
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    source = getattr(field, "source", None)
    if model is None or not source or source == "*":
        return False
    for part in source.split("."):
        try:
            model_field = model._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        if getattr(model_field, "null", False):
            return True
        model = getattr(model_field, "related_model", None)
        if model is None:
            return False
    return False


def _model_field(field: serializers.Field) -> Any:
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    source = getattr(field, "source", None)
    if model is None or not source or "." in source:
        return None
    try:
        return model._meta.get_field(source)
    except FieldDoesNotExist:
        return None


def _source_allows_blank(field: serializers.Field) -> bool:
    return bool(getattr(_model_field(field), "blank", False))


def _method_may_return_none(field: Any) -> bool:
    """A `SerializerMethodField` whose method is annotated `-> X | None` (drf-spectacular reads only
    `Optional[X]` as nullable)."""
    if not isinstance(field, serializers.SerializerMethodField) or field.parent is None:
        return False
    method = getattr(field.parent, field.method_name, None)
    try:
        returned = typing.get_type_hints(method).get("return") if method is not None else None
    except Exception:  # an annotation that cannot be resolved here: leave it to drf-spectacular
        return False
    return type(None) in typing.get_args(returned)


class AutoSchema(SpectacularAutoSchema):
    """drf-spectacular's AutoSchema, and: a read-only field declared by hand (`DateTimeField(source=...,
    read_only=True)`) is `nullable` when the model column it reads is. drf-spectacular knows that only for
    fields it builds from the model itself, so answers carrying a null broke their own schema."""

    def _get_serializer_field_meta(self, field: Any, direction: str) -> dict[str, Any]:
        meta: dict[str, Any] = super()._get_serializer_field_meta(field, direction)
        if "nullable" not in meta and (
            (getattr(field, "read_only", False) and _source_is_nullable(field)) or _method_may_return_none(field)
        ):
            meta["nullable"] = True
        return meta

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        """A PATCH body is partial (every field optional), as DRF's update does; a view that reads its
        PATCH body whole (an action taking POST and PATCH alike) marks its serializer `whole_on_patch`."""
        if self.method == "PATCH" and getattr(serializer, "whole_on_patch", False):
            self.method = "POST"
            try:
                return super()._get_request_for_media_type(serializer, direction)
            finally:
                self.method = "PATCH"
        return super()._get_request_for_media_type(serializer, direction)

    def _get_filter_parameters(self) -> list[dict[str, Any]]:
        """Filter parameters (django-filter) take an empty value, which means "no filter"."""
        parameters: list[dict[str, Any]] = super()._get_filter_parameters()
        for parameter in parameters:
            # A multiple-choice filter (an array) refuses an empty value; every other filter ignores it.
            if parameter.get("in") == "query" and parameter.get("schema", {}).get("type") != "array":
                parameter["allowEmptyValue"] = True
        return parameters

    def _map_serializer_field(self, field: Any, direction: str, bypass_extensions: bool = False) -> Any:
        if (
            isinstance(field, serializers.ChoiceField)
            and field.read_only
            and not field.allow_blank
            and _source_allows_blank(field)
        ):
            field.allow_blank = True  # a model column with choices and blank=True answers "" too
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(schema, dict):
            document_list_bounds(field, schema)
            if direction == "request":
                document_non_null_json(field, schema)
        return schema


# Any JSON value but null, in OpenAPI 3.0 (which has no `type: null` to exclude).
# An array needs `items` in OpenAPI 3.0 (generators such as openapi-python-client drop the schema without).
NON_NULL_JSON = [
    {"type": "array", "items": {}} if t == "array" else {"type": t}
    for t in ("object", "array", "string", "number", "boolean")
]


def document_list_bounds(field: Any, schema: dict[str, Any]) -> None:
    """A list field's `allow_empty=False`, `min_length` and `max_length` as `minItems`/`maxItems`, which
    drf-spectacular leaves out: without them an empty list looked valid and was refused with 400."""
    if schema.get("type") != "array" or not isinstance(field, (serializers.ListField, serializers.ListSerializer)):
        return
    minimum = getattr(field, "min_length", None) or 0
    if not getattr(field, "allow_empty", True):
        minimum = max(minimum, 1)
    if minimum:
        schema["minItems"] = max(minimum, schema.get("minItems", 0))
    maximum = getattr(field, "max_length", None)
    if maximum is not None and "maxItems" not in schema:
        schema["maxItems"] = maximum


def document_non_null_json(field: Any, schema: dict[str, Any]) -> None:
    """A request `JSONField` without `allow_null` takes any JSON value but null; drf-spectacular writes
    `{}` (anything, null included), so null looked valid and was refused with 400."""
    if not isinstance(field, serializers.JSONField) or field.allow_null:
        return
    if any(key in schema for key in ("type", "$ref", "anyOf", "oneOf", "allOf", "nullable")):
        return
    schema["anyOf"] = [dict(t) for t in NON_NULL_JSON]


TEXT_RULES = (
    "Bodies are JSON (`application/json`) and answers are JSON. Text may not contain NUL characters or "
    "unpaired UTF-16 surrogates (400 `invalid_character`). Unknown query parameters are ignored."
)


def document_text_rules(result: dict[str, Any]) -> dict[str, Any]:
    """Says once, in the API's description, what holds for every string and every operation."""
    info = result.setdefault("info", {})
    if TEXT_RULES not in info.get("description", ""):
        info["description"] = f"{info.get('description', '')}\n\n{TEXT_RULES}".strip()
    return result


def postprocess_schema(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """The project's drf-spectacular post-processing hook (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"])."""
    result = document_idempotency(mark_deprecated(document_errors(result)))
    return document_text_rules(document_protocol_errors(result))
