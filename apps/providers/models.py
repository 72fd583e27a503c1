"""A tenant's own provider accounts (`ProviderConfig`), and the ledger of provider status events
already applied (`ProviderEvent`, written by the notifications app, purged here). What comes back
from providers and recipients about deliveries (engagement, the suppression list) is the
notifications app's (`apps.notifications.models`).

Public options are stored as JSON; the secret fields (API keys, auth tokens, passwords,
service-account keys) are one Fernet ciphertext of a JSON object (`apps.core.crypto`: key
from SIGNALBOX_ENCRYPTION_KEY, or derived from SECRET_KEY), so the column never holds a
secret in clear. Only `apps.providers.services` writes `ProviderConfig` rows.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import models

from apps.core import crypto
from apps.core.tenancy import TenantOwned


class ProviderConfig(TenantOwned):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=64, help_text="Unique per tenant, e.g. `sendgrid-eu`.")
    provider = models.CharField(max_length=32, help_text="Which adapter: sendgrid, smtp, twilio, fcm, slack, …")
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower goes first in the channel's chain.")
    enabled = models.BooleanField(default=True)
    options = models.JSONField(default=dict, blank=True)
    secrets_encrypted = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("priority", "created_at")
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="provider_config_unique_name")]
        indexes = [models.Index(fields=["tenant", "provider", "enabled"], name="provider_config_chain")]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"

    def secrets(self) -> dict[str, Any]:
        """The secret fields in clear; raises `crypto.DecryptionFailed` if the key changed."""
        if not self.secrets_encrypted:
            return {}
        value = json.loads(crypto.decrypt(self.secrets_encrypted))
        return value if isinstance(value, dict) else {}

    def set_secrets(self, values: dict[str, Any]) -> None:
        kept = {k: v for k, v in values.items() if v not in (None, "")}
        self.secrets_encrypted = crypto.encrypt(json.dumps(kept)) if kept else ""

    def config(self) -> dict[str, Any]:
        """Options and secrets as the one flat dict an adapter's `from_config` takes."""
        return {**self.options, **self.secrets()}


class ProviderEvent(models.Model):
    """One provider status event already applied (SendGrid's `sg_event_id`): a replayed or
    duplicated event finds its id here and changes nothing. Purged after
    `SIGNALBOX_PROVIDER_EVENT_RETENTION_DAYS` (providers do not retry that long)."""

    provider = models.CharField(max_length=16)
    event_id = models.CharField(max_length=128)
    kind = models.CharField(max_length=32, blank=True)
    delivery_id = models.UUIDField(null=True, blank=True)
    received_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["provider", "event_id"], name="provider_event_unique")]
        indexes = [models.Index(fields=["received_at"], name="provider_event_received")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.event_id}"
