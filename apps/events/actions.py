"""What rules and workflow effects do in other apps: send a notification, start a tracked task.

The one place that calls apps.notifications and apps.tasks, so rule actions and transition
effects share it. Both are called inside the caller's transaction: the notification or task is
a row committed (or rolled back) with the rule execution or the transition, and its work is
published after commit by the owning app.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.core.actors import Actor
from apps.core.errors import ApplicationError
from apps.notifications.services.notifications import notification_create
from apps.tasks.services import task_start


class ActionFailed(ApplicationError):
    """A notification or task could not be recorded; `code` says why."""

    status_code = 422
    code = "action_failed"


# A notification goes to recipients or to a topic, never both (notification_create refuses the pair).
AUDIENCE_CONFLICT = "Give a topic, or recipients and/or watchers: true; a notification cannot have both."


def audience_conflict(*, recipients: Any, topic: Any, watchers: Any) -> bool:
    """Whether a notification action names a topic and recipients or watchers: validation of rule
    actions and workflow effects refuses it, since `send_notification` would have to drop one."""
    return bool(topic) and (bool(recipients) or watchers is True)


def send_notification(
    *,
    tenant: Any,
    template: str,
    recipients: list[Any],
    topic: str = "",
    data: dict[str, Any],
    idempotency_key: str,
    source: dict[str, Any],
) -> str:
    """Records a notification (apps.notifications) and returns its id; fan-out is published on commit.

    `recipients` are recipients' external ids (or recipient objects); or give a `topic` instead.
    Both at once is refused (`audience_conflict`) rather than dropping the recipients.
    """
    if topic and recipients:
        raise ActionFailed(AUDIENCE_CONFLICT, code="audience_conflict")
    try:
        with transaction.atomic():
            notification = notification_create(
                tenant=tenant,
                template=template,
                payload=data,
                recipients=recipients or None,
                topic=topic or None,
                idempotency_key=idempotency_key,
                metadata={"source": source},
            )
    except ApplicationError as exc:
        raise ActionFailed(f"The notification was refused: {_detail(exc)}", code=exc.code, fields=exc.fields) from exc
    return str(notification.pk)


def start_task(*, tenant: Any, task: str, params: dict[str, Any], idempotency_key: str, source: dict[str, Any]) -> str:
    """Starts a tracked task (apps.tasks) and returns its TaskExecution id; published on commit."""
    origin = f"rule:{source['rule_id']}" if source.get("rule_id") else f"workflow:{source.get('workflow', '')}"
    try:
        with transaction.atomic():
            execution = task_start(
                tenant=tenant,
                name=task,
                input=params,
                actor=Actor(kind="system", id=origin[:200]),
                idempotency_key=idempotency_key,
            )
    except ApplicationError as exc:
        raise ActionFailed(f"The task was refused: {_detail(exc)}", code=exc.code, fields=exc.fields) from exc
    return str(execution.pk)


def _detail(exc: ApplicationError) -> str:
    if not exc.fields:
        return exc.message
    return exc.message + " " + "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
