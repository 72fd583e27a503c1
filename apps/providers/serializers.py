"""Shapes of the providers API. Secrets go in, and only ever come out masked (`SG.****abcd`)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from rest_framework import serializers

from apps.core.crypto import DecryptionFailed
from apps.providers import registry
from apps.providers.models import ProviderConfig

MASK = "****"


def mask(field: str, value: Any) -> str:
    """Enough to recognise a secret (its kind and last characters), never enough to use it."""
    text = str(value)
    if field == "service_account_json":
        try:
            email = json.loads(text).get("client_email")
        except (ValueError, AttributeError):
            email = None
        return f"{MASK} (service account {email})" if email else MASK
    if text.startswith(("https://", "http://")):
        parts = urlsplit(text)
        return f"{parts.scheme}://{parts.hostname}/{MASK}{text[-4:]}"
    if len(text) < 12:
        return MASK
    head = ""
    for separator in (".", "_", "-"):
        index = text.find(separator)
        if 0 < index <= 5:
            head = text[: index + 1]
            break
    return f"{head}{MASK}{text[-4:]}"


class ProviderConfigSerializer(serializers.ModelSerializer[ProviderConfig]):
    channel = serializers.SerializerMethodField()
    secrets = serializers.SerializerMethodField(help_text="Secret fields, masked. Never returned in clear.")
    configured = serializers.SerializerMethodField(help_text="Whether every required field is set.")

    class Meta:
        model = ProviderConfig
        fields = [
            "id",
            "name",
            "provider",
            "channel",
            "priority",
            "enabled",
            "options",
            "secrets",
            "configured",
            "created_at",
            "updated_at",
        ]

    def get_channel(self, obj: ProviderConfig) -> str:
        cls = registry.ADAPTERS.get(obj.provider)
        return str(cls.channel) if cls else ""

    def _secrets(self, obj: ProviderConfig) -> dict[str, Any] | None:
        try:
            return obj.secrets()
        except DecryptionFailed:
            return None

    def get_secrets(self, obj: ProviderConfig) -> dict[str, str]:
        values = self._secrets(obj)
        if values is None:
            return {"error": "cannot be decrypted with the configured keys"}
        return {field: mask(field, value) for field, value in values.items()}

    def get_configured(self, obj: ProviderConfig) -> bool:
        cls = registry.ADAPTERS.get(obj.provider)
        values = self._secrets(obj)
        return cls is not None and values is not None and not cls.missing({**obj.options, **values})


class ProviderConfigCreateSerializer(serializers.Serializer[Any]):
    name = serializers.SlugField(max_length=64)
    provider = serializers.ChoiceField(choices=sorted(registry.ADAPTERS))
    priority = serializers.IntegerField(min_value=0, max_value=32767, default=100)
    enabled = serializers.BooleanField(default=True)
    options = serializers.DictField(default=dict, help_text="Public fields, e.g. from_email, host, port.")
    secrets = serializers.DictField(default=dict, help_text="Secret fields, e.g. api_key; stored encrypted.")


class ProviderConfigUpdateSerializer(serializers.Serializer[Any]):
    name = serializers.SlugField(max_length=64, required=False)
    priority = serializers.IntegerField(min_value=0, max_value=32767, required=False)
    enabled = serializers.BooleanField(required=False)
    options = serializers.DictField(required=False, help_text="Merged key by key; null removes a key.")
    secrets = serializers.DictField(required=False, help_text="Merged key by key; null removes a key.")


class ProviderStatusSerializer(serializers.Serializer[Any]):
    channel = serializers.CharField()
    provider = serializers.CharField()
    name = serializers.CharField()
    source = serializers.CharField(help_text="`tenant` (its own config) or `environment`.")  # type: ignore[assignment]
    id = serializers.UUIDField(allow_null=True)
    priority = serializers.IntegerField(allow_null=True)
    enabled = serializers.BooleanField()
    position = serializers.IntegerField(allow_null=True, help_text="Place in the channel's chain; null: not in it.")
    configured = serializers.BooleanField()
    missing = serializers.ListField(child=serializers.CharField())
    healthy = serializers.BooleanField()
    detail = serializers.CharField()
    recent_attempts = serializers.IntegerField()
    recent_error_rate = serializers.FloatField(allow_null=True)


class ProviderTestSerializer(serializers.Serializer[Any]):
    to = serializers.JSONField(
        help_text="The address: an email, an E.164 number, a push token (or a list), a channel or a webhook URL."
    )
    subject = serializers.CharField(required=False, max_length=200)
    text = serializers.CharField(required=False, max_length=2000)


class SendResultSerializer(serializers.Serializer[Any]):
    provider = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["accepted", "transient", "permanent"])
    message_id = serializers.CharField()
    code = serializers.CharField()
    detail = serializers.CharField()
    status_code = serializers.IntegerField(allow_null=True)
    retry_after = serializers.FloatField(allow_null=True)
    invalid_tokens = serializers.ListField(child=serializers.CharField())
