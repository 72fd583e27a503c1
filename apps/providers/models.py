"""A tenant's own provider accounts (`ProviderConfig`), and the tables of what comes back from
providers and recipients: email engagement (`Engagement`), the suppression list (`Suppression`)
and the applied status events (`ProviderEvent`), all written by the notifications app.

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
from apps.providers.base import Channel


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


class Engagement(TenantOwned):
    """What a recipient did with a delivered email: its first and last open, or a click on one link.

    One row per (delivery, kind, url), counting repeats, so a mail client that loads the pixel
    on every view grows a counter, not the table. `delivery_id` is not a foreign key: a
    delivery may be purged before its engagement.
    """

    class Kind(models.TextChoices):
        OPEN = "open"
        CLICK = "click"

    delivery_id = models.UUIDField()
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.URLField(max_length=2000, blank=True)
    count = models.PositiveIntegerField(default=1)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["delivery_id", "kind", "url"], name="provider_engagement_unique")
        ]
        indexes = [models.Index(fields=["tenant", "-first_at"], name="provider_engagement_recent")]


class Suppression(TenantOwned):
    """An address a tenant must not send to on a channel, because a provider said so: a hard
    bounce or spam report (email), STOP or an invalid number (SMS), a webhook URL that answered
    410 Gone. Fan-out and the send pipeline suppress deliveries to it (`suppressed_address`);
    deleting the row (admin, API) allows the address again. Written by
    `apps.notifications.services.suppressions` only.

    `address` is normalised (emails lower-cased) so one address is one row.
    """

    class Reason(models.TextChoices):
        HARD_BOUNCE = "hard_bounce"
        SPAM_REPORT = "spam_report"
        UNSUBSCRIBED = "unsubscribed"  # SMS STOP (Twilio 21610), a provider-side unsubscribe
        INVALID_ADDRESS = "invalid_address"  # Twilio 21211, unknown destinations
        NOT_MOBILE = "not_mobile"  # Twilio 21614, landlines
        BLOCKED = "blocked"
        GONE = "gone"  # a webhook or chat endpoint that answered 410 / was archived
        MANUAL = "manual"

    channel = models.CharField(max_length=16, choices=[(c.value, c.value) for c in Channel if c != Channel.PUSH])
    address = models.CharField(max_length=1000)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    source = models.CharField(max_length=64, blank=True, help_text="What reported it, e.g. `sendgrid:bounce`.")
    detail = models.TextField(blank=True)
    delivery_id = models.UUIDField(null=True, blank=True, help_text="The delivery that revealed it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(fields=["tenant", "channel", "address"], name="provider_suppression_unique")
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.address} ({self.reason})"


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
