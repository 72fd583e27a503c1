"""Tenant and ApiKey.

An API key is `sbx_<8 lookup chars>.<32 secret chars>`. The lookup prefix is stored in clear
to find the row in one indexed read; the whole key is stored only as a SHA-512 hash (keys are
high-entropy random strings, so a fast hash is safe where a password would need a slow one).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, ClassVar

from django.db import models
from django.utils import timezone
from django.utils.crypto import get_random_string
from rest_framework_api_key.crypto import KeyGenerator
from rest_framework_api_key.models import AbstractAPIKey, BaseAPIKeyManager

KEY_PREFIX = "sbx_"


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    # Per-tenant knobs (retention days, retry policy, quotas); absent keys fall back to settings.
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("slug",)

    def __str__(self) -> str:
        return self.slug


class Scope(models.TextChoices):
    """What a key may do. `*` grants everything a tenant key can do."""

    ALL = "*", "Everything"
    READ = "read", "Read anything"
    NOTIFICATIONS_WRITE = "notifications:write", "Send notifications, manage recipients and templates"
    TASKS_WRITE = "tasks:write", "Start, cancel and schedule tasks"
    TRANSITIONS_WRITE = "transitions:write", "Apply transitions, manage workflows"
    EVENTS_WRITE = "events:write", "Record events, manage rules and webhook endpoints"
    ADMIN = "admin", "Manage API keys and provider settings"


class SignalboxKeyGenerator(KeyGenerator):
    def get_prefix(self) -> str:
        return KEY_PREFIX + get_random_string(8)


class ApiKeyManager(BaseAPIKeyManager):
    key_generator = SignalboxKeyGenerator(secret_key_length=32)


class ApiKey(AbstractAPIKey):
    objects: ClassVar[ApiKeyManager] = ApiKeyManager()  # type: ignore[assignment]

    prefix = models.CharField(max_length=16, unique=True, editable=False)
    name = models.CharField(max_length=100)
    # A platform key has no tenant: it acts for the tenant named in `X-Tenant-ID` (staff only).
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="api_keys")
    is_platform = models.BooleanField(default=False)
    scopes = models.JSONField(default=list, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    rotated_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.CharField(max_length=200, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(is_platform=True, tenant__isnull=True)
                | models.Q(is_platform=False, tenant__isnull=False),
                name="apikey_platform_xor_tenant",
            )
        ]

    def has_scope(self, scope: str) -> bool:
        if self.is_platform or Scope.ALL in self.scopes:
            return True
        if scope == Scope.READ:
            # Any write scope implies reading.
            return bool(self.scopes)
        return scope in self.scopes

    @property
    def is_usable(self) -> bool:
        return not self.revoked and not self.has_expired

    def __str__(self) -> str:
        return f"{self.prefix} ({self.name})"

    def touch(self, *, every_seconds: int = 60) -> None:
        """Records use at most once a minute, so a busy key does not write on every request."""
        now = timezone.now()
        if self.last_used_at is None or (now - self.last_used_at).total_seconds() >= every_seconds:
            # Conditional: each process keeps its own copy of a key (apps/tenancy/credentials.py), so the
            # row, not the copy, says whether another process has written this minute already.
            recent = models.Q(last_used_at__gt=now - timedelta(seconds=every_seconds))
            type(self).objects.filter(pk=self.pk).exclude(recent).update(last_used_at=now)
            self.last_used_at = now

    def actor(self) -> dict[str, Any]:
        return {"type": "api_key", "id": self.prefix, "name": self.name}
