"""The notification intent: `notification_create` records it, `notification_cancel` stops it.

`notification_create` checks everything first (template, variables, channels, audience) and
refuses with field errors before writing anything; then, in one short transaction, it upserts
inline recipients, writes the intent and publishes the fan-out task on commit. Nothing is sent
in the request: fan-out and sends happen on the notification's priority queue.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Conflict
from apps.core.publish import publish_on_commit
from apps.notifications import conf, hooks, rendering, selectors
from apps.notifications.models import Delivery, Notification, Template, Topic
from apps.notifications.services import recipients as recipient_services
from apps.notifications.services.announce import Audience, notification_announce_sent
from apps.notifications.services.digest import digest_rule_errors, digest_rule_resolve
from apps.notifications.services.live import notification_live_changed
from apps.notifications.services.templates import DEFAULT_CATEGORY, category_get_or_create
from apps.observability import metrics
from apps.observability.audit import audit_record
from workers.queues import PRIORITY_QUEUES


def queue_for(priority: str) -> str:
    return PRIORITY_QUEUES.get(priority, PRIORITY_QUEUES["normal"])


def notification_lock(notification_id: Any) -> None:
    """Serializes the tail of each fan-out chunk with cancellation, per notification (PostgreSQL
    advisory lock, released at commit). SQLite serializes every writer anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"notification:{notification_id}"])


@dataclass
class _Checked:
    template: Template | None
    content: dict[str, Any] | None
    variables: list[dict[str, Any]]
    category_key: str
    channels: list[str]
    recipient_ids: list[int] | None
    inline_recipients: list[dict[str, Any]]
    topic: Topic | None
    known_recipients: dict[str, int]  # {external_id: pk} of the existing recipients named by id


def _check_content(
    *,
    tenant: Any,
    template_key: str | None,
    content: Any,
    category: str | None,
    payload: Mapping[str, Any],
    errors: dict[str, Any],
) -> tuple[Template | None, dict[str, Any] | None, list[dict[str, Any]], str]:
    if bool(template_key) == (content is not None):
        errors["template"] = ["Give a template key or inline content (not both)."]
        return None, None, [], DEFAULT_CATEGORY
    if template_key:
        template = selectors.template_for_send(tenant_id=getattr(tenant, "pk", tenant), key=template_key)
        if template is None or template.current_version is None:
            errors["template"] = [f"No template {template_key!r}."]
            return None, None, [], DEFAULT_CATEGORY
        if template.archived_at is not None:
            errors["template"] = [f"The template {template_key!r} is archived; restore it to send with it."]
            return None, None, [], DEFAULT_CATEGORY
        version = template.current_version
        missing = rendering.missing_variables(version.variables, payload)
        if missing:
            errors["payload"] = [f"Missing variable(s) the template declares: {', '.join(missing)}."]
        return template, None, version.variables, template.category.key
    # Inline content: {channel: fields}, may use any payload key.
    if not isinstance(content, Mapping) or not content:
        errors["content"] = ["An object of channel -> fields."]
        return None, None, [], DEFAULT_CATEGORY
    content_errors = rendering.content_errors({rendering.DEFAULT_LOCALE: content}, set(payload))
    if content_errors:
        errors["content"] = content_errors.get(rendering.DEFAULT_LOCALE, content_errors)
    return None, {rendering.DEFAULT_LOCALE: dict(content)}, [], category or DEFAULT_CATEGORY


def _check_audience(
    *, tenant: Any, recipients: Sequence[Any] | None, topic: str | None, errors: dict[str, Any]
) -> tuple[list[str], list[dict[str, Any]], Topic | None, dict[str, int]]:
    """(external ids, cleaned inline recipients, topic, {external_id: pk} of the ids that exist)."""
    if (recipients is None) == (topic is None):
        errors["recipients"] = ["Give `recipients` or a `topic` (one of them)."]
        return [], [], None, {}
    if topic is not None:
        found_topic = Topic.objects.filter(tenant=tenant, key=topic).first()
        if found_topic is None:
            errors["topic"] = [f"No topic {topic!r}."]
        return [], [], found_topic, {}
    assert recipients is not None
    limit = conf.get().MAX_RECIPIENTS_PER_REQUEST
    if not isinstance(recipients, Sequence) or isinstance(recipients, str) or not recipients:
        errors["recipients"] = ["A non-empty list of external ids or recipient objects."]
        return [], [], None, {}
    if len(recipients) > limit:
        errors["recipients"] = [f"At most {limit} per notification; send to a topic for larger audiences."]
        return [], [], None, {}
    external_ids: list[str] = []
    inline: list[dict[str, Any]] = []
    item_errors: dict[str, Any] = {}
    for index, item in enumerate(recipients):
        if isinstance(item, str):
            external_ids.append(item)
            continue
        clean, problems = recipient_services.recipient_clean(item)
        if problems:
            item_errors[str(index)] = problems
        else:
            inline.append(clean)
    if item_errors:
        errors["recipients"] = item_errors
        return [], [], None, {}
    inline_ids = {r["external_id"] for r in inline}
    found, unknown = recipient_services.recipients_resolve(
        tenant=tenant, external_ids=[e for e in external_ids if e not in inline_ids]
    )
    if unknown:
        shown = ", ".join(unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
        errors["recipients"] = [f"Unknown recipient(s): {shown}. Create them first or pass them as objects."]
    return external_ids, inline, None, found


def _check(
    *,
    tenant: Any,
    template: str | None,
    content: Any,
    category: str | None,
    payload: Any,
    recipients: Sequence[Any] | None,
    topic: str | None,
    channels: Sequence[str] | None,
    priority: str,
    scheduled_at: datetime | None,
    dedup_window_seconds: int | None,
) -> tuple[_Checked, list[str]]:
    errors: dict[str, Any] = {}
    if not isinstance(payload, Mapping):
        errors["payload"] = ["Must be an object."]
        payload = {}
    template_obj, inline_content, variables, category_key = _check_content(
        tenant=tenant, template_key=template, content=content, category=category, payload=payload, errors=errors
    )
    available: set[str] = set()
    if template_obj is not None and template_obj.current_version is not None:
        available = rendering.channels_with_default_content(template_obj.current_version.content)
        chosen = list(channels) if channels is not None else list(template_obj.current_version.default_channels)
    elif inline_content is not None:
        available = rendering.channels_with_default_content(inline_content)
        chosen = list(channels) if channels is not None else sorted(available)
    else:
        chosen = list(channels or [])
    unknown = [c for c in chosen if c not in rendering.CHANNELS]
    if unknown:
        errors["channels"] = [f"Unknown channel(s): {', '.join(unknown)}; use {', '.join(rendering.CHANNELS)}."]
    elif "template" not in errors and "content" not in errors:
        if not chosen:
            errors["channels"] = ["No channels: name some, or give the template default channels."]
        without = [c for c in chosen if c not in available]
        if without:
            errors["channels"] = [f"No content for channel(s): {', '.join(without)}."]
    if priority not in Notification.Priority.values:
        errors["priority"] = [f"Choose from {', '.join(Notification.Priority.values)}."]
    if scheduled_at is not None and timezone.is_naive(scheduled_at):
        errors["scheduled_at"] = ["Give a time zone (e.g. 2030-01-01T09:00:00Z)."]
    if dedup_window_seconds is not None and dedup_window_seconds <= 0:
        errors["dedup_window_seconds"] = ["Must be positive."]
    external_ids, inline, topic_obj, known = _check_audience(
        tenant=tenant, recipients=recipients, topic=topic, errors=errors
    )
    if errors:
        raise ApplicationError(
            "The notification is invalid; nothing was sent. See fields.", code="validation_error", fields=errors
        )
    checked = _Checked(
        template=template_obj,
        content=inline_content,
        variables=variables,
        category_key=category_key,
        channels=list(dict.fromkeys(chosen)),
        recipient_ids=None,
        inline_recipients=inline,
        topic=topic_obj,
        known_recipients=known,
    )
    return checked, external_ids


def _check_digest(
    digest: Mapping[str, Any] | None, checked: _Checked, payload: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The digest rule the notification carries: the request's, else its template's; the key
    rendered with the payload and scoped to the template."""
    version = checked.template.current_version if checked.template else None
    source = digest if digest is not None else (version.digest if version is not None else None)
    rule, problems = digest_rule_errors(source, None)
    if rule is not None:
        scope = checked.template.key if checked.template else f"inline:{checked.category_key}"
        try:
            return digest_rule_resolve(rule=rule, scope=scope, payload=payload)
        except rendering.RenderError as exc:
            problems = [f"`key`: {exc}"]
    if problems:
        raise ApplicationError(
            "The notification is invalid; nothing was sent. See fields.",
            code="validation_error",
            fields={"digest": problems},
        )
    return None


def notification_create(
    *,
    tenant: Any,
    template: str | None = None,
    content: Mapping[str, Any] | None = None,
    category: str | None = None,
    payload: Mapping[str, Any] | None = None,
    recipients: Sequence[str | Mapping[str, Any]] | None = None,
    topic: str | None = None,
    channels: Sequence[str] | None = None,
    priority: str = Notification.Priority.NORMAL,
    scheduled_at: datetime | None = None,
    dedup_key: str = "",
    dedup_window_seconds: int | None = None,
    idempotency_key: str = "",
    metadata: Mapping[str, Any] | None = None,
    digest: Mapping[str, Any] | None = None,
    flow: str | None = None,
) -> Notification:
    """Records a notification intent and publishes its fan-out after commit.

    `recipients` are external ids of existing recipients and/or recipient objects (upserted by
    external_id); or give a `topic` key instead. `channels` defaults to the template's default
    channels. With `idempotency_key`, a second call with the same key returns the first
    notification instead of creating another. `digest` (`{"key", "window_minutes"}`) collects
    the deliveries into digests (docs/scheduling.md); without it the template's rule applies, if
    any. `flow` (a flow key, apps.flows) runs the notification through that flow's steps, which
    choose its channels; the template may come from the flow. Raises ApplicationError
    (`validation_error`, with `fields`) and changes nothing when anything is wrong.
    """
    payload = dict(payload or {})
    plan = None
    if flow:
        plan = hooks.notification_planner(
            tenant=tenant, key=flow, template=template, content=content, channels=channels, payload=payload
        )
        template, channels = plan.template, plan.channels
    if idempotency_key:
        existing = Notification.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is not None:
            return _same_intent(existing, template=template, payload=payload, topic=topic)
    checked, external_ids = _check(
        tenant=tenant,
        template=template,
        content=content,
        category=category,
        payload=payload,
        recipients=recipients,
        topic=topic,
        channels=channels,
        priority=priority,
        scheduled_at=scheduled_at,
        dedup_window_seconds=dedup_window_seconds,
    )
    digest_rule = _check_digest(digest, checked, payload)
    now = timezone.now()
    scheduled = scheduled_at is not None and scheduled_at > now
    # A lone INSERT needs no transaction (nor, inside the API's, a savepoint: two more round trips each,
    # docs/benchmarks.md "API"). Several writes (inline recipients, a category made on first use) share
    # one; with an idempotency key too, so that losing a race to a concurrent request with the same key
    # leaves a usable transaction to read the winner in.
    several_writes = bool(checked.inline_recipients) or checked.template is None or bool(idempotency_key)
    try:
        with transaction.atomic() if several_writes else nullcontext():
            recipient_ids: list[int] | None = None
            if checked.topic is None:
                # The ids named by external id were resolved by the check; only upserted ones are new.
                found = dict(checked.known_recipients)
                if checked.inline_recipients:
                    recipient_services.recipients_write(tenant=tenant, cleaned=checked.inline_recipients)
                    upserted, _ = recipient_services.recipients_resolve(
                        tenant=tenant, external_ids=[r["external_id"] for r in checked.inline_recipients]
                    )
                    found.update(upserted)
                wanted = list(dict.fromkeys([*external_ids, *(r["external_id"] for r in checked.inline_recipients)]))
                recipient_ids = [found[e] for e in wanted if e in found]
            notification = Notification(
                tenant=tenant,
                template=checked.template,
                template_version=checked.template.current_version if checked.template else None,
                category=checked.template.category
                if checked.template
                else category_get_or_create(tenant=tenant, key=checked.category_key),
                content=checked.content,
                payload=payload,
                recipient_ids=recipient_ids,
                topic=checked.topic,
                channels=checked.channels,
                priority=priority,
                scheduled_at=scheduled_at,
                dedup_key=dedup_key,
                dedup_window_seconds=dedup_window_seconds or (conf.get().DEDUP_WINDOW_SECONDS if dedup_key else 0),
                idempotency_key=idempotency_key,
                metadata=dict(metadata or {}),
                digest=digest_rule,
                status=Notification.Status.SCHEDULED if scheduled else Notification.Status.ACCEPTED,
                enqueued_at=None if scheduled else now,
            )
            _insert(notification)
            if plan is not None:
                plan.attach(notification)
            if not scheduled:
                _publish_fan_out(notification)
    except IntegrityError:
        if idempotency_key:
            found_existing = Notification.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
            if found_existing is not None:
                return _same_intent(found_existing, template=template, payload=payload, topic=topic)
        raise
    metrics.INTENTS.labels(kind="notification").inc()
    return notification


@functools.cache
def _insert_sql() -> tuple[str, tuple[Any, ...]]:
    """The notification's INSERT, built once from the model's metadata (names quoted, values parameters)."""
    q = connection.ops.quote_name
    fields = tuple(Notification._meta.local_concrete_fields)
    columns = ", ".join(q(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {q(Notification._meta.db_table)} ({columns}) VALUES ({marks})", fields  # noqa: S608


def _insert(notification: Notification) -> None:
    """`notification.save(force_insert=True)`: each field's `pre_save` (the `auto_now` times) and
    `get_db_prep_save`, as the ORM does, into a statement built once (the ORM compiled it on every POST,
    about 900 Python calls, docs/benchmarks.md "API"). Should Notification ever get save signal
    receivers, the ORM's save runs them."""
    if pre_save.has_listeners(Notification) or post_save.has_listeners(Notification):
        notification.save(force_insert=True)
        return
    sql, fields = _insert_sql()
    db = connections[DEFAULT_DB_ALIAS]  # once: each use of the `connection` proxy looks it up again
    params = [field.get_db_prep_save(field.pre_save(notification, True), db) for field in fields]
    with db.cursor() as cursor:
        cursor.execute(sql, params)
    notification._state.adding = False
    notification._state.db = db.alias


def _same_intent(
    existing: Notification,
    *,
    template: str | None,
    payload: Mapping[str, Any],
    topic: str | None,
) -> Notification:
    """The notification an idempotency key already made, if this call asks for the same thing.

    The API's idempotency records compare whole request bodies for 24 hours; this check outlives
    them, so a key reused later for another message (template, topic or payload) is refused
    instead of answered with the old one.
    """
    same = (
        (existing.template.key if existing.template_id and existing.template else None) == (template or None)
        and (existing.topic.key if existing.topic_id and existing.topic else None) == (topic or None)
        and existing.payload == dict(payload)
    )
    if not same:
        raise ApplicationError(
            "This idempotency key was used for a different notification.",
            code="idempotency_key_reused",
            status_code=422,
        )
    return existing


def _publish_fan_out(notification: Notification) -> None:
    publish_on_commit("signalbox.notifications.fan_out", str(notification.pk), queue=queue_for(notification.priority))


def notification_complete_if_settled(
    *, notification_id: Any, tenant_id: Any, now: datetime | None = None, audience: Audience | None = None
) -> bool:
    """Marks a dispatched notification completed once none of its deliveries is in flight.

    Runs in its own short transaction (after a batch is recorded), so it never holds delivery
    row locks while it waits for the notification row; `notification.sent` commits with it when
    the tenant listens (`audience`, shared by a batch, asks once per tenant).
    """
    if Delivery.objects.filter(notification_id=notification_id, status__in=Delivery.IN_FLIGHT).exists():
        return False
    announce = (audience or Audience()).observes(tenant_id, "notification.sent")
    with transaction.atomic() if announce else nullcontext():
        # `completion_filter`: not while a flow still has steps to run for it (apps.flows).
        completed = Notification.objects.filter(
            hooks.completion_filter(), pk=notification_id, status=Notification.Status.DISPATCHED
        ).update(status=Notification.Status.COMPLETED, completed_at=now or timezone.now(), updated_at=timezone.now())
        if completed and announce:
            notification_announce_sent(notification_id=notification_id)
    if completed:
        notification_live_changed(notification_id=notification_id)
    return bool(completed)


CANCELLABLE_NOTIFICATION = (
    Notification.Status.SCHEDULED,
    Notification.Status.ACCEPTED,
    Notification.Status.FANNING_OUT,
    Notification.Status.DISPATCHED,
)


def notification_cancel(*, notification: Notification, actor: Actor = SYSTEM) -> tuple[Notification, int]:
    """Stops what has not been sent: the intent if not fanned out, and every delivery still
    pending, queued, deferred or waiting for a digest. Deliveries being sent right now finish.

    Returns (notification, number of deliveries cancelled). Cancelling twice is harmless.
    """
    now = timezone.now()
    with transaction.atomic():
        notification_lock(notification.pk)
        current = Notification.objects.select_for_update().get(pk=notification.pk)
        if current.status == Notification.Status.CANCELLED:
            return current, 0
        # A completed notification may still have deliveries waiting for their digest window.
        waiting_digest = (
            current.status == Notification.Status.COMPLETED
            and Delivery.objects.filter(notification=current, status=Delivery.Status.DIGEST).exists()
        )
        if current.status not in CANCELLABLE_NOTIFICATION and not waiting_digest:
            raise Conflict(
                f"The notification is {current.status}; there is nothing left to cancel.", code="not_cancellable"
            )
        cancelled = Delivery.objects.filter(notification=current, status__in=Delivery.CANCELLABLE).update(
            status=Delivery.Status.CANCELLED, next_attempt_at=None, failed_at=now
        )
        current.status = Notification.Status.CANCELLED
        current.cancelled_at = now
        current.save(update_fields=["status", "cancelled_at", "updated_at"])
        notification_live_changed(notification_id=current.pk)
        hooks.cancelled(current.pk)
        audit_record(
            action="notification.cancelled",
            tenant=current.tenant,
            actor=actor,
            target=current,
            data={"deliveries_cancelled": cancelled},
        )
    return current, cancelled
