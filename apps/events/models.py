"""Domain events, the rules that act on them, and outbound webhooks (endpoints, messages, attempts).

An `Event` is recorded by a client (`POST /api/v1/events/`) or by Signalbox itself
(`event_emit`). The `events` queue matches it against the tenant's `Rule`s (each run logged as a
`RuleExecution`) and fans it out to subscribed `WebhookEndpoint`s as one `WebhookMessage` each.
Every try to deliver a message is a `WebhookAttempt`. `Watcher`s follow a subject and can be
notified by rules and workflow effects.
"""

from __future__ import annotations

import uuid

from django.db import models

from apps.core.tenancy import TenantOwned
from apps.notifications.models import uuid7


class EventStatus(models.TextChoices):
    PENDING = "pending", "Waiting for the events queue (or its next attempt, next_attempt_at)"
    PROCESSED = "processed", "Rules run and webhooks fanned out"
    DEAD = "dead", "Processing failed SIGNALBOX_EVENT_RETRY_SCHEDULE + 1 times (last_error); replayable"


class EventSource(models.TextChoices):
    API = "api", "Recorded by a client"
    SIGNALBOX = "signalbox", "Emitted by Signalbox"


class Event(TenantOwned):  # type: ignore[django-manager-missing]
    # A UUIDv7: its first 48 bits are its creation time, the key of the monthly partitions on
    # PostgreSQL (docs/partitions.md); events made before it took v7 ids keep their UUIDv4.
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    type = models.CharField(max_length=200)
    subject_type = models.CharField(max_length=64, blank=True)
    subject_id = models.CharField(max_length=200, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    actor = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=16, choices=EventSource.choices, default=EventSource.API)
    depth = models.PositiveSmallIntegerField(
        default=0, help_text="How many rule actions led to this event (0: not caused by a rule)."
    )
    status = models.CharField(max_length=16, choices=EventStatus.choices, default=EventStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Processing attempts started so far.")
    last_error = models.TextField(blank=True, help_text="Why the last attempt failed; cleared when one succeeds.")
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Pending: when the next attempt is due (empty: now). While an attempt runs, when it is "
        "presumed lost.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="event_tenant_time"),
            models.Index(fields=["tenant", "subject_type", "subject_id"], name="event_subject"),
            models.Index(fields=["status", "created_at"], name="event_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.subject_type}/{self.subject_id}"

    @property
    def subject(self) -> dict[str, str]:
        return {"type": self.subject_type, "id": self.subject_id}


class Watcher(TenantOwned):
    """A recipient (a notifications external id) following a subject; rule actions and workflow
    effects with `watchers: true` notify them."""

    subject_type = models.CharField(max_length=64)
    subject_id = models.CharField(max_length=200)
    recipient = models.CharField(max_length=200, help_text="The recipient's external id.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("created_at", "id")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "subject_type", "subject_id", "recipient"], name="watcher_unique_per_subject"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.recipient} watches {self.subject_type}/{self.subject_id}"


class Rule(TenantOwned):  # type: ignore[django-manager-missing]
    """When an event of `event_type` (`*`, `order.*` wildcards) matches `condition`, run `actions`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    event_type = models.CharField(max_length=200, help_text="An event type, `order.*`, or `*`.")
    condition = models.TextField(blank=True, help_text="Optional CEL over `event` (type, subject, payload, actor).")
    actions = models.JSONField(default=list, help_text="What to do; see docs/webhooks.md, 'Rules'.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name", "created_at")
        indexes = [models.Index(fields=["tenant", "enabled"], name="rule_tenant_enabled")]

    def __str__(self) -> str:
        return f"{self.name} ({self.event_type})"


class RuleOutcome(models.TextChoices):
    SUCCEEDED = "succeeded", "Every action done"
    FAILED = "failed", "An action failed (see actions)"
    SKIPPED = "skipped", "The condition was false"
    ERROR = "error", "The condition could not be evaluated"


class RuleExecution(TenantOwned):
    """The observer log: one row per rule whose event type matched an event."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="executions")
    # Partitioned by event_id on PostgreSQL: no database constraint into the partitioned events
    # table; kept by the events app (created with its event, dropped or deleted with it).
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="rule_executions", db_constraint=False)
    outcome = models.CharField(max_length=16, choices=RuleOutcome.choices)
    actions = models.JSONField(default=list, help_text="Per action: {type, status, ref or error}.")
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [models.UniqueConstraint(fields=["rule", "event"], name="rule_execution_once_per_event")]
        indexes = [models.Index(fields=["rule", "-created_at"], name="rule_execution_rule_time")]


class WebhookEndpoint(TenantOwned):  # type: ignore[django-manager-missing]
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=500, blank=True)
    event_types = models.JSONField(
        default=list, blank=True, help_text="Event types to receive (`order.*`, `*` allowed); empty means all."
    )
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # Fernet-encrypted `whsec_…` secrets (apps/core/crypto.py); the clear secret is shown once.
    secret_encrypted = models.TextField(editable=False)
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    failing_since = models.DateTimeField(
        null=True, blank=True, help_text="First failed attempt since the last success; cleared by a success."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return self.url


class MessageStatus(models.TextChoices):
    PENDING = "pending", "Waiting for its next attempt (next_attempt_at)"
    SENDING = "sending", "Claimed by a worker"
    DELIVERED = "delivered", "Answered 2xx"
    FAILED = "failed", "Dead: out of attempts, endpoint gone or disabled; replayable"


class WebhookMessage(TenantOwned):  # type: ignore[django-manager-missing]
    """One event for one endpoint. Its id is the `webhook-id` header, the same on every retry."""

    # A UUIDv7 (the key of its attempts' partitions); the table is partitioned by event_id, so the
    # unique (endpoint, event) holds across partitions and the event reference has no database
    # constraint (kept by the events app, as for rule executions).
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="messages")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="webhook_messages", db_constraint=False)
    event_type = models.CharField(max_length=200)
    body = models.TextField(help_text="The exact JSON sent (and signed), frozen at creation.")
    status = models.CharField(max_length=16, choices=MessageStatus.choices, default=MessageStatus.PENDING)
    attempt_count = models.PositiveIntegerField(default=0)
    schedule_step = models.PositiveIntegerField(default=0, help_text="Position in the retry schedule.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="When a deliver task was last published for the current attempt."
    )
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [models.UniqueConstraint(fields=["endpoint", "event"], name="webhook_message_once_per_endpoint")]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_message_due"),
            models.Index(fields=["tenant", "status", "-created_at"], name="webhook_message_tenant_status"),
            # Retention purges walk a tenant's messages by age, whatever their status.
            models.Index(fields=["tenant", "created_at"], name="webhook_message_tenant_time"),
        ]

    def __str__(self) -> str:
        return f"msg_{self.id.hex} {self.event_type} ({self.status})"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.id.hex}"


class AttemptOutcome(models.TextChoices):
    SUCCESS = "success", "2xx"
    FAILED = "failed", "Non-2xx answer"
    GONE = "gone", "410 Gone: endpoint disabled"
    TIMEOUT = "timeout", "No answer within the timeout"
    NETWORK = "network", "Connection or TLS error"
    REFUSED = "refused", "Address refused by the SSRF guard"


class WebhookAttempt(TenantOwned):
    # Partitioned by message_id on PostgreSQL: no database constraint into the partitioned messages.
    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempts", db_constraint=False)
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The first KiB of the answer.")
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("message", "number")
        constraints = [models.UniqueConstraint(fields=["message", "number"], name="webhook_attempt_unique_number")]
