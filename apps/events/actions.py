"""What rules and workflow effects do in other apps: send a notification, start a tracked task.

The one place that calls apps.notifications and apps.tasks, so rule actions and transition
effects share it. Both are called inside the caller's transaction: the notification or task is
a row committed (or rolled back) with the rule execution or the transition, and its work is
published after commit by the owning app.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from apps.core.errors import ApplicationError


class ActionFailed(ApplicationError):
    """A notification or task could not be recorded; `code` says why."""

    status_code = 422
    code = "action_failed"


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
    """
    from apps.notifications.services.notifications import notification_create

    try:
        with transaction.atomic():
            notification = notification_create(
                tenant=tenant,
                template=template,
                payload=data,
                recipients=None if topic else recipients,
                topic=topic or None,
                idempotency_key=idempotency_key,
                metadata={"source": source},
            )
    except ApplicationError as exc:
        raise ActionFailed(f"The notification was refused: {_detail(exc)}", code=exc.code, fields=exc.fields) from exc
    return str(notification.pk)


def start_task(*, tenant: Any, task: str, params: dict[str, Any], idempotency_key: str, source: dict[str, Any]) -> str:
    """Starts a tracked task (apps.tasks) and returns its TaskExecution id; published on commit."""
    from apps.tasks.services import task_start

    origin = f"rule:{source['rule_id']}" if source.get("rule_id") else f"workflow:{source.get('workflow', '')}"
    try:
        with transaction.atomic():
            execution = task_start(
                tenant=tenant,
                name=task,
                input=params,
                actor=("system", origin[:200]),
                idempotency_key=idempotency_key,
            )
    except ApplicationError as exc:
        raise ActionFailed(f"The task was refused: {_detail(exc)}", code=exc.code, fields=exc.fields) from exc
    return str(execution.pk)


def _detail(exc: ApplicationError) -> str:
    if not exc.fields:
        return exc.message
    return exc.message + " " + "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
