"""A DRF serializer's fields as a JSON Schema (draft 2020-12), for `GET /api/v1/task-types/`.

A direct field-to-schema mapping rather than drf-spectacular's generator, whose serializer mapping
needs a view and a request; this covers the fields task inputs use and falls back to `{}` (any
value) for the rest, which is still a correct, if loose, schema.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

_FORMATS: list[tuple[type[serializers.Field], dict[str, Any]]] = [
    (serializers.EmailField, {"type": "string", "format": "email"}),
    (serializers.URLField, {"type": "string", "format": "uri"}),
    (serializers.UUIDField, {"type": "string", "format": "uuid"}),
    (serializers.SlugField, {"type": "string", "pattern": r"^[-a-zA-Z0-9_]+$"}),
    (serializers.IPAddressField, {"type": "string"}),
    (serializers.CharField, {"type": "string"}),
    (serializers.DateTimeField, {"type": "string", "format": "date-time"}),
    (serializers.DateField, {"type": "string", "format": "date"}),
    (serializers.TimeField, {"type": "string", "format": "time"}),
    (serializers.DurationField, {"type": "string"}),
    (serializers.BooleanField, {"type": "boolean"}),
    (serializers.IntegerField, {"type": "integer"}),
    (serializers.FloatField, {"type": "number"}),
    (serializers.DecimalField, {"type": "string", "format": "decimal"}),
    (serializers.DictField, {"type": "object"}),
    (serializers.HStoreField, {"type": "object"}),
]


def serializer_json_schema(serializer: serializers.Serializer[Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        properties[name] = field_json_schema(field)
        if field.required:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def field_json_schema(field: serializers.Field) -> dict[str, Any]:
    schema = _type_of(field)
    if field.help_text:
        schema["description"] = str(field.help_text)
    if field.default is not serializers.empty and not callable(field.default):
        schema["default"] = field.default
    if getattr(field, "allow_null", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def _type_of(field: serializers.Field) -> dict[str, Any]:
    if isinstance(field, serializers.ListSerializer):
        return {"type": "array", "items": serializer_json_schema(field.child)}  # type: ignore[arg-type]
    if isinstance(field, serializers.Serializer):
        return serializer_json_schema(field)
    if isinstance(field, serializers.MultipleChoiceField):
        return {"type": "array", "items": {"enum": list(field.choices)}, "uniqueItems": True}
    if isinstance(field, serializers.ChoiceField):
        return {"enum": list(field.choices)}
    if isinstance(field, serializers.ListField):
        schema: dict[str, Any] = {"type": "array", "items": field_json_schema(field.child)}
        if field.min_length is not None:
            schema["minItems"] = field.min_length
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
        return schema
    if isinstance(field, serializers.JSONField):
        return {}
    for cls, base in _FORMATS:
        if isinstance(field, cls):
            schema = dict(base)
            if isinstance(field, serializers.CharField):
                if field.max_length is not None:
                    schema["maxLength"] = field.max_length
                if field.min_length is not None:
                    schema["minLength"] = field.min_length
            if isinstance(field, (serializers.IntegerField, serializers.FloatField)):
                if field.min_value is not None:
                    schema["minimum"] = field.min_value
                if field.max_value is not None:
                    schema["maximum"] = field.max_value
            return schema
    return {}
