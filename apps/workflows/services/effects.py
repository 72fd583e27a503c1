"""A transition's effects: emit an event, send a notification, start a tracked task.

They run inside the transition's transaction, after the state change and the log row: each
writes rows (an Event, a Notification, a TaskExecution) whose work the owning app publishes
after commit. If one cannot be recorded, the whole transition is refused (`effect_failed`) and
nothing changes, so an applied transition always has all of its effects.
"""

from __future__ import annotations

from typing import Any

from apps.core import cel
from apps.core.errors import ApplicationError, Unprocessable
from apps.events import actions
from apps.events.services.events import event_emit
from apps.events.services.rules import recipients_from
from apps.events.services.watchers import watchers_of
from apps.workflows.models import TransitionLog, WorkflowInstance
from apps.workflows.spec import Effect


def _run(
    effect: Effect, *, index: int, instance: WorkflowInstance, log: TransitionLog, variables: dict[str, Any]
) -> dict[str, Any]:
    key = f"transition:{log.pk}:{index}"
    source = {
        "kind": "workflow",
        "workflow": instance.workflow_key,
        "instance_id": str(instance.pk),
        "transition": log.transition,
    }
    if effect.type == "event":
        event = event_emit(
            tenant=instance.tenant_id,
            type=effect.event_type,
            subject=instance.subject,
            payload={
                "workflow": instance.workflow_key,
                "instance_id": str(instance.pk),
                "transition": log.transition,
                "from": log.from_state,
                "to": log.to_state,
                "data": variables["data"],
                "payload": variables["payload"],
            },
            actor=log.actor,
            only_if_observed=False,
        )
        return {"type": "event", "ref": str(event.pk) if event else None}
    if effect.type == "notification":
        recipients = recipients_from(list(effect.recipients), variables)
        if effect.watchers:
            recipients += [
                w for w in watchers_of(tenant=instance.tenant_id, subject=instance.subject) if w not in recipients
            ]
        if not recipients and not effect.topic:
            if effect.watchers and not effect.recipients:
                return {"type": "notification", "ref": None, "skipped": "The subject has no watchers."}
            raise ApplicationError("The recipient expressions gave no recipient.", code="no_recipients")
        data = {k: cel.evaluate(v, variables) for k, v in effect.data.items()} or variables
        ref = actions.send_notification(
            tenant=instance.tenant,
            template=effect.template,
            recipients=recipients,
            topic=effect.topic,
            data=data,
            idempotency_key=key,
            source=source,
        )
        return {"type": "notification", "ref": ref}
    params = {k: cel.evaluate(v, variables) for k, v in effect.params.items()}
    ref = actions.start_task(
        tenant=instance.tenant, task=effect.task, params=params, idempotency_key=key, source=source
    )
    return {"type": "task", "ref": ref}


def effects_run(
    *, effects: tuple[Effect, ...], instance: WorkflowInstance, log: TransitionLog, variables: dict[str, Any]
) -> list[dict[str, Any]]:
    """Runs every effect; raises `effect_failed` (naming the effect) if one cannot be recorded."""
    done = []
    for index, effect in enumerate(effects):
        try:
            done.append(_run(effect, index=index, instance=instance, log=log, variables=variables))
        except (ApplicationError, cel.CelError) as exc:
            code = getattr(exc, "code", "cel_error")
            raise Unprocessable(
                f"Effect {index} ({effect.type}) of {log.transition!r} failed: {exc.message}",
                code="effect_failed",
                fields={f"effects[{index}]": [f"{code}: {exc.message}"]},
            ) from exc
    return done
