"""Notification tables: templates and their versions, recipients, devices, topics, preferences,
notification intents, their fan-out chunks, deliveries with their attempts, digest items, and what
comes back about deliveries: email engagement and the suppression list.

The in-app inbox is not a table of its own: an in-app `Delivery` is the inbox item (it carries
`read_at`, `seen_at`, `archived_at`). Rows are written by the services in `services/`, never by
`save()` overrides or signals.
"""

from __future__ import annotations

import array
import os
import threading
import time
import uuid
from typing import Any

from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.core.tenancy import TenantOwned
from apps.providers.base import Channel

_uuid7_state = [0, 0]  # last millisecond, sequence within it
_uuid7_lock = threading.Lock()


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7, with a 12-bit counter in `rand_a`, method 1):
    new rows land at the right edge of the index, and ids made by one process sort in creation
    order, which the inbox cursor relies on."""
    with _uuid7_lock:
        millis = time.time_ns() // 1_000_000
        last, seq = _uuid7_state
        if millis <= last:
            millis, seq = last, seq + 1
            if seq > 0xFFF:
                millis, seq = last + 1, 0
        else:
            seq = int.from_bytes(os.urandom(2), "big") & 0x7FF  # leave room to count up
        _uuid7_state[:] = [millis, seq]
    tail = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=(millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0x2 << 62 | tail)


def uuid7_many(count: int) -> list[uuid.UUID]:
    """`count` ids as `uuid7` would make them one after another (the same order, the same
    counter), with one lock and one read of randomness: fan-out takes a chunk's ids at once."""
    stamps = []
    with _uuid7_lock:
        millis = time.time_ns() // 1_000_000
        last, seq = _uuid7_state
        if millis <= last:
            millis = last
        else:
            seq = (int.from_bytes(os.urandom(2), "big") & 0x7FF) - 1  # the first one takes this + 1
        for _ in range(count):
            seq += 1
            if seq > 0xFFF:
                millis, seq = millis + 1, 0
            stamps.append((millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0x2 << 62)
        if count:
            _uuid7_state[:] = [millis, seq]
    # 62 random bits per id from one read; the UUIDs are built as uuid.UUID builds itself
    # (object.__setattr__ on its slots) without its argument checks: a third of the time.
    noise = array.array("Q", os.urandom(8 * count))
    mask = (1 << 62) - 1
    ids = []
    for stamp, bits in zip(stamps, noise, strict=True):
        made = _new_uuid(uuid.UUID)
        _set_slot(made, "int", stamp | bits & mask)
        _set_slot(made, "is_safe", _UNKNOWN_SAFETY)
        ids.append(made)
    return ids


_new_uuid, _set_slot = object.__new__, object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown  # an enum member: read once, not per id (a slow lookup)


CHANNEL_CHOICES = [(c.value, c.value) for c in Channel]


class Category(TenantOwned):  # type: ignore[django-manager-missing]  # django-stubs misses `templates`
    """What a notification is about (`orders`, `security`); preferences are set per category.

    A critical category cannot be opted out of and ignores quiet hours and digests.
    """

    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    critical = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("key",)
        verbose_name_plural = "categories"
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="notif_category_unique_key")]

    def __str__(self) -> str:
        return self.key


class Template(TenantOwned):
    """A named message (`order_shipped`). Its content lives in immutable `TemplateVersion` rows;
    `current_version` is the one new notifications use. Deleting archives it."""

    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="templates")
    current_version = models.ForeignKey(
        "TemplateVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("key",)
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="notif_template_unique_key")]

    def __str__(self) -> str:
        return self.key


class TemplateVersion(models.Model):
    """One immutable revision of a template. Never updated: a change is a new row.

    `content` is `{locale: {channel: {field: jinja source}}}` with a `default` locale;
    `variables` is `[{"name", "required", "example"}]`, the only names the content may use
    besides `recipient`.
    """

    template = models.ForeignKey(Template, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    category_key = models.SlugField(max_length=64, help_text="The category when this version was made.")
    variables = models.JSONField(default=list, blank=True)
    default_channels = models.JSONField(default=list, blank=True)
    content = models.JSONField(default=dict)
    digest = models.JSONField(
        null=True, blank=True, help_text='Digest rule {"key": jinja source, "window_minutes": n}; null: none.'
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ("-id",)
        constraints = [models.UniqueConstraint(fields=["template", "version"], name="notif_template_version_unique")]

    def __str__(self) -> str:
        return f"{self.template_id} v{self.version}"


class Recipient(TenantOwned):  # type: ignore[django-manager-missing]  # django-stubs misses related managers
    """Someone notifications go to, known to the client by `external_id`."""

    external_id = models.CharField(max_length=255)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(max_length=254, blank=True)
    phone = models.CharField(max_length=20, blank=True, help_text="E.164, e.g. +14155550100.")
    locale = models.CharField(max_length=35, blank=True, help_text="BCP 47, e.g. fr-CA; empty: the default.")
    timezone = models.CharField(max_length=64, blank=True, help_text="IANA name; empty: UTC.")
    chat_address = models.CharField(max_length=500, blank=True, help_text="Chat channel, user id or webhook URL.")
    webhook_url = models.URLField(max_length=1000, blank=True)
    data = models.JSONField(default=dict, blank=True, help_text="Custom attributes, available to templates.")
    unsubscribed_at = models.DateTimeField(null=True, blank=True, help_text="Global unsubscribe.")
    webhook_secret_encrypted = models.TextField(
        blank=True,
        default="",
        db_default="",  # bulk COPY and raw inserts that name no such column still work
        editable=False,
        help_text="This recipient's own webhook signing secret, Fernet-encrypted; empty: the provider's.",
    )
    # Inbox tokens carry the generation they were minted in; revoking them all is one increment.
    inbox_token_generation = models.PositiveIntegerField(
        default=0,
        db_default=0,  # bulk COPY and raw inserts that name no such column still work
        editable=False,
        help_text="Inbox tokens minted before the last revocation (a lower generation) are refused.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("external_id",)
        constraints = [
            models.UniqueConstraint(fields=["tenant", "external_id"], name="notif_recipient_unique_external_id")
        ]

    def __str__(self) -> str:
        return self.external_id


class Device(TenantOwned):
    """A push token of a recipient. A token belongs to one recipient: registering it again moves it."""

    class Platform(models.TextChoices):
        IOS = "ios"
        ANDROID = "android"
        WEB = "web"

    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="devices")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    token = models.CharField(max_length=512)
    active = models.BooleanField(default=True)
    deactivated_reason = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [models.UniqueConstraint(fields=["tenant", "token"], name="notif_device_unique_token")]
        indexes = [models.Index(fields=["recipient", "active"], name="notif_device_recipient")]

    def __str__(self) -> str:
        return f"{self.platform}:{self.token[:12]}…"


class Topic(TenantOwned):
    """A named audience (`beta-testers`); a notification can go to every subscriber."""

    key = models.SlugField(max_length=100)
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("key",)
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="notif_topic_unique_key")]

    def __str__(self) -> str:
        return self.key


class TopicMembership(models.Model):
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="memberships")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="topic_memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # (topic, recipient) is also the index fan-out walks in recipient-id ranges.
        constraints = [models.UniqueConstraint(fields=["topic", "recipient"], name="notif_topic_member_unique")]

    def __str__(self) -> str:
        return f"{self.topic_id}:{self.recipient_id}"


class Digest(models.TextChoices):
    IMMEDIATE = "immediate"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"


# What a digest item or window collects for: a recipient's preference, or a template's digest rule.
DIGEST_ITEM_KINDS = [*Digest.choices, ("rule", "rule")]


class Preference(TenantOwned):
    """One layer of preferences. `recipient` empty: a tenant default; `category` empty: every category.

    Layers merge from general to specific (tenant/all, tenant/category, recipient/all,
    recipient/category); a field left empty inherits. `channels` maps channel -> on/off and merges
    key by key. Quiet hours are local times in the recipient's timezone; equal start and end
    means "no quiet hours" (to switch off an inherited window).
    """

    recipient = models.ForeignKey(
        Recipient, null=True, blank=True, on_delete=models.CASCADE, related_name="preferences"
    )
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    channels = models.JSONField(default=dict, blank=True)
    digest = models.CharField(max_length=16, choices=Digest.choices, blank=True)
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "recipient", "category"], name="notif_preference_unique", nulls_distinct=False
            ),
            models.CheckConstraint(
                condition=Q(quiet_hours_start__isnull=True, quiet_hours_end__isnull=True)
                | Q(quiet_hours_start__isnull=False, quiet_hours_end__isnull=False),
                name="notif_preference_quiet_hours_pair",
            ),
        ]


class Notification(TenantOwned):  # type: ignore[django-manager-missing]  # django-stubs misses `deliveries`
    """The intent: one message (a template or inline content) for an audience, on some channels."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled"  # waits for scheduled_at; the dispatcher accepts it then
        ACCEPTED = "accepted"  # recorded; the fan-out task is published
        FANNING_OUT = "fanning_out"  # chunks are being expanded into deliveries
        DISPATCHED = "dispatched"  # every delivery exists; some are still in flight
        COMPLETED = "completed"  # nothing left in flight (digest items wait in their own pipeline)
        CANCELLED = "cancelled"
        FAILED = "failed"  # could not fan out (e.g. the template vanished)

    class Priority(models.TextChoices):
        HIGH = "high"
        NORMAL = "normal"
        BULK = "bulk"

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    template = models.ForeignKey(Template, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    template_version = models.ForeignKey(
        TemplateVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="+")
    content = models.JSONField(null=True, blank=True, help_text="Inline content {channel: {field: source}}.")
    payload = models.JSONField(default=dict, blank=True)
    recipient_ids = models.JSONField(null=True, blank=True, help_text="Explicit audience (Recipient pks).")
    topic = models.ForeignKey(Topic, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    channels = models.JSONField(default=list)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    dedup_key = models.CharField(max_length=255, blank=True)
    dedup_window_seconds = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    digest = models.JSONField(
        null=True, blank=True, help_text='The digest rule in force: {"key": resolved key, "window_minutes": n}.'
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACCEPTED)
    error = models.TextField(blank=True)
    recipient_count = models.PositiveIntegerField(null=True, blank=True)
    chunks_total = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="Last time the fan-out task was published.")
    fanout_started_at = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"],
                name="notif_notification_idempotency",
                condition=~Q(idempotency_key=""),
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="notif_notification_list"),
            models.Index(fields=["scheduled_at"], name="notif_notification_due", condition=Q(status="scheduled")),
            models.Index(
                fields=["status", "updated_at"],
                name="notif_notification_open",
                condition=Q(status__in=["accepted", "fanning_out", "dispatched"]),
            ),
        ]

    def __str__(self) -> str:
        return str(self.id)


class FanoutChunk(models.Model):
    """A slice of a notification's audience, expanded into deliveries by one task in one transaction.

    Explicit audiences slice `Notification.recipient_ids[start:end]`; topic audiences take the
    members with `id_from <= recipient_id < id_to` (either bound may be open).
    """

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    start = models.PositiveIntegerField(null=True, blank=True)
    end = models.PositiveIntegerField(null=True, blank=True)
    id_from = models.BigIntegerField(null=True, blank=True)
    id_to = models.BigIntegerField(null=True, blank=True)
    delivery_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    # Runs started (counted before the work, so a run killed by the time limit counts too); past
    # FANOUT_CHUNK_MAX_ATTEMPTS the chunk is dead, with the last failure, and is not run again.
    attempts = models.PositiveSmallIntegerField(default=0, db_default=0)
    last_error = models.TextField(blank=True, default="", db_default="")
    dead_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        constraints = [models.UniqueConstraint(fields=["notification", "index"], name="notif_chunk_unique_index")]
        indexes = [models.Index(fields=["published_at"], name="notif_chunk_pending", condition=Q(done_at=None))]

    def __str__(self) -> str:
        return f"{self.notification_id}#{self.index}"


class NextChangeSeq(models.Func):
    """`nextval('notif_delivery_change_seq')` on PostgreSQL; on SQLite (`make run`) a trigger fills it."""

    output_field = models.BigIntegerField()

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> Any:
        if connection.vendor == "postgresql":
            return "nextval('notif_delivery_change_seq')", []
        return "NULL", []  # SQLite allows no subquery in a default; migration 0007's trigger fills it


# Module-level because Meta cannot see names of the class body it sits in.
IN_FLIGHT_STATUSES = ("pending", "queued", "sending", "deferred", "unknown")
DUE_STATUSES = ("pending", "deferred", "unknown")


class Delivery(TenantOwned):
    """One recipient on one channel for one notification; for `in_app` it is also the inbox item."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waits for the dispatcher (next_attempt_at): retries, recovered rows
        QUEUED = "queued"  # a send task carrying its id is on the broker
        SENDING = "sending"  # claimed by a worker until lease_expires_at
        # A request's answer was lost (timeout after sending, a worker killed mid-request): the
        # provider may have it. Waits for its callback until next_attempt_at, then is retried with
        # the same provider (docs/reliability.md, "Ambiguous outcomes").
        UNKNOWN = "unknown"
        SENT = "sent"  # a provider accepted it
        DELIVERED = "delivered"  # confirmed at the destination (in-app: visible in the inbox)
        READ = "read"
        BOUNCED = "bounced"  # the provider reported a bounce after accepting it (docs/reliability.md)
        FAILED = "failed"  # permanent failure, not retried
        DEAD = "dead"  # gave up after the last attempt
        SUPPRESSED = "suppressed"  # not sent, see suppression_reason
        CANCELLED = "cancelled"
        DEFERRED = "deferred"  # quiet hours: next_attempt_at is the end of the window
        DIGEST = "digest"  # handed to the digest pipeline (a DigestItem waits for its window)

    class SuppressionReason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed"
        OPTED_OUT = "opted_out"
        NO_ADDRESS = "no_address"
        DUPLICATE = "duplicate"
        NO_CONTENT = "no_content"
        SUPPRESSED_ADDRESS = "suppressed_address"  # on the tenant's suppression list (bounced, STOP, …)

    IN_FLIGHT = IN_FLIGHT_STATUSES
    DUE = DUE_STATUSES
    CANCELLABLE = ("pending", "queued", "deferred", "digest")
    INBOX_VISIBLE = ("delivered", "read")

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # This is the hottest table: every index costs on each insert and each status change, so the
    # foreign keys get no index of their own where a composite index below already leads with
    # them (tenant: notif_delivery_list, notification: the unique constraint, recipient:
    # notif_delivery_recipient). Template versions are never deleted, so that key needs none.
    # Tenant, notification and template version carry no database constraint either (migration
    # 0009): every row of a fan-out chunk has the same three, read in the chunk's own transaction,
    # and PostgreSQL's per-row checks of them were a third of the cost of inserting a row
    # (docs/benchmarks.md, "Fan-out"). Django's on_delete still cascades; the recipient, different
    # on each row, keeps its constraint.
    tenant = models.ForeignKey(
        "tenancy.Tenant", on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries", db_index=False, db_constraint=False
    )
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    channel = models.CharField(max_length=16, choices=CHANNEL_CHOICES)
    status = models.CharField(max_length=16, choices=Status.choices)
    suppression_reason = models.CharField(max_length=32, choices=SuppressionReason.choices, blank=True)
    template_version = models.ForeignKey(
        TemplateVersion,
        null=True,
        blank=True,
        on_delete=models.RESTRICT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The claim's token: a sender writes only rows still carrying its own (services/sending.py).
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    provider = models.CharField(max_length=64, blank=True)
    # Set before each provider request, cleared when a definite answer is recorded: while set, that
    # provider may hold the message (an answer lost, a worker killed mid-request), so the retry goes
    # to it again (its idempotency key can absorb the copy) instead of failing over.
    in_flight_provider = models.CharField(max_length=64, blank=True, default="", db_default="")
    provider_message_id = models.CharField(max_length=255, blank=True)
    rendered = models.JSONField(null=True, blank=True, help_text="What was sent: address, locale and content.")
    dedup_key = models.CharField(max_length=255, null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    # The in-app inbox state (unused on other channels).
    seen_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)
    # The live streams' cursor (docs/realtime.md): a PostgreSQL sequence value taken on insert (the
    # column default, so bulk COPY pays nothing extra) and again on each inbox state change.
    change_seq = models.BigIntegerField(null=True, blank=True, editable=False, db_default=NextChangeSeq())

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "recipient", "channel"], name="notif_delivery_unique_per_channel"
            )
        ]
        indexes = [
            models.Index(fields=["notification", "channel", "status"], name="notif_delivery_counts"),
            models.Index(fields=["tenant", "-created_at"], name="notif_delivery_list"),
            models.Index(fields=["recipient", "-id"], name="notif_delivery_recipient"),
            # A live inbox stream's resume: this recipient's in-app changes after a cursor.
            models.Index(
                fields=["recipient", "change_seq"], name="notif_delivery_inbox_seq", condition=Q(channel="in_app")
            ),
            # The dispatcher: due retries and quiet-hour deferrals.
            models.Index(fields=["next_attempt_at"], name="notif_delivery_due", condition=Q(status__in=DUE_STATUSES)),
            # "Is anything of this notification still in flight?" in one index probe.
            models.Index(
                fields=["notification"], name="notif_delivery_inflight", condition=Q(status__in=IN_FLIGHT_STATUSES)
            ),
            # The sweeper: claims past their lease, and rows queued but never picked up.
            models.Index(fields=["lease_expires_at"], name="notif_delivery_leased", condition=Q(status="sending")),
            models.Index(fields=["queued_at"], name="notif_delivery_queued", condition=Q(status="queued")),
            models.Index(
                fields=["tenant", "dedup_key", "recipient"],
                name="notif_delivery_dedup",
                condition=Q(dedup_key__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.id}"


class DeliveryAttempt(models.Model):
    """One call to a channel provider for a delivery: who, what came back, how long it took."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"
        TRANSIENT = "transient"
        PERMANENT = "permanent"
        LOST = "lost"  # the worker vanished mid-send; the sweeper recorded it when the lease ran out

    # No database constraint: on PostgreSQL deliveries are partitioned (docs/partitions.md) and a
    # foreign key would have to name their partition key. Integrity is kept by code: attempts are
    # written for a delivery just claimed, and go with it (Django's cascade, the retention purge's
    # DELETE, or their own partition once no delivery of its range is left).
    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempts_log", db_index=False, db_constraint=False
    )  # notif_attempt_delivery leads with it
    number = models.PositiveSmallIntegerField()
    provider = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    status_code = models.IntegerField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=255, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=["delivery", "number"], name="notif_attempt_delivery")]

    def __str__(self) -> str:
        return f"{self.delivery_id}#{self.number} {self.outcome}"


class DigestItem(TenantOwned):
    """A delivery waiting for its digest window. Flushing digests is its own pipeline (the
    `digests` queue, apps/notifications/services/digests_flush.py); it only takes items whose
    delivery is still in status `digest`, and links nothing to a window once it is closed."""

    # No database constraint (deliveries are partitioned, docs/partitions.md): the item is made with
    # its delivery, and goes with it (Django's cascade, the purge's DELETE, a dropped partition).
    delivery = models.OneToOneField(Delivery, on_delete=models.CASCADE, related_name="digest_item", db_constraint=False)
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="+")
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=CHANNEL_CHOICES)
    # hourly/daily/weekly (the recipient's preference) or "rule" (the template's digest rule).
    frequency = models.CharField(max_length=16, choices=DIGEST_ITEM_KINDS)
    window = models.ForeignKey("DigestWindow", null=True, blank=True, on_delete=models.CASCADE, related_name="items")
    created_at = models.DateTimeField(default=timezone.now)
    flushed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["frequency", "recipient", "channel"],
                name="notif_digest_waiting",
                condition=Q(flushed_at=None),
            )
        ]


class DigestWindow(TenantOwned):  # type: ignore[django-manager-missing]  # django-stubs misses `items`
    """One digest: the items of one recipient on one channel collected until `due_at`, then sent
    as one message (`notification`, a notification of its own with one delivery).

    `group_key` names what collects (`daily`, or `rule:<template>:<key>`); at most one window
    per recipient, channel and group is open. `window_key` names this window for good
    (`daily@2030-01-02T08:00:00Z`): a preference window can never be opened twice, so an item
    arriving after its window was flushed goes to the next one instead of a second digest.
    """

    class Status(models.TextChoices):
        OPEN = "open"  # collecting; flushed once due_at has passed
        SENT = "sent"  # flushed into `notification`
        EMPTY = "empty"  # flushed with nothing left to send (every item was cancelled)

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=16, choices=CHANNEL_CHOICES)
    frequency = models.CharField(max_length=16, choices=DIGEST_ITEM_KINDS)
    group_key = models.CharField(max_length=300)
    window_key = models.CharField(max_length=340)
    starts_at = models.DateTimeField()
    due_at = models.DateTimeField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    item_count = models.PositiveIntegerField(default=0, help_text="Items sent in the digest.")
    notification = models.ForeignKey(Notification, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    published_at = models.DateTimeField(null=True, blank=True, help_text="Last handed to a flush task.")
    flushed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "channel", "window_key"], name="notif_digest_window_unique_key"
            ),
            models.UniqueConstraint(
                fields=["recipient", "channel", "group_key"],
                name="notif_digest_window_one_open",
                condition=Q(status="open"),
            ),
        ]
        indexes = [
            models.Index(fields=["due_at"], name="notif_digest_window_due", condition=Q(status="open")),
            models.Index(fields=["tenant", "created_at"], name="notif_digest_window_time"),
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.window_key}"


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
        db_table = "providers_engagement"  # its table from before it moved here
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
        db_table = "providers_suppression"  # its table from before it moved here
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(fields=["tenant", "channel", "address"], name="provider_suppression_unique")
        ]

    def __str__(self) -> str:
        return f"{self.channel}:{self.address} ({self.reason})"


class SinkRecord(models.Model):
    """What the `recording_sink` channel adapter received: the test and development stand-in for a provider."""

    delivery_id = models.CharField(max_length=64, db_index=True)
    tenant_id = models.CharField(max_length=64)
    channel = models.CharField(max_length=16)
    to = models.JSONField(null=True)
    message = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.channel}:{self.delivery_id}"
