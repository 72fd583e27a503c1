from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.tenancy.models import ApiKey, Scope, Tenant


class TenantSerializer(serializers.ModelSerializer[Tenant]):
    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "is_active", "created_at"]


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    expires_at = serializers.DateTimeField(source="expiry_date", read_only=True)
    created_at = serializers.DateTimeField(source="created", read_only=True)

    class Meta:
        model = ApiKey
        fields = ["prefix", "name", "scopes", "created_at", "expires_at", "revoked", "last_used_at", "created_by"]


class ApiKeyCreateSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), default=lambda: [Scope.ALL.value]
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApiKeyRotateSerializer(serializers.Serializer[Any]):
    old_key_expires_at = serializers.DateTimeField(help_text="Until when the old key keeps working.")


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The key in clear. Shown once; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
