"""Transition intents: recorded by the API, applied by the `transitions` queue (or inline, `?wait=true`).

`intent_create` refuses at once what can never succeed (an unknown transition, a payload that
breaks the schema, a caller without the guard's scopes, an `if_version` the instance is no longer
at) and records the rest as a pending `TransitionIntent` with a TaskExecution to poll. The intent
pins the instance version it applies to (`observed_version`): the caller's `if_version`, else the
version at acceptance. `intent_apply` is the one code path that applies it, in one transaction:

1. lock the intent row (a duplicate task waits, then finds it finished);
2. read the instance; check `expected_state`, the pinned version, the source state, the guard's
   conditions;
3. compare-and-set: `filter(pk=…, version=observed, state=s).update(state=…, version=observed+1)`;
4. write the log row, run the effects, emit `transition.applied` (published after commit).

Of intents accepted at one version exactly one applies: the others end `conflict`, whether they
read the instance after the winner committed (step 2) or lost the conditional UPDATE (step 3) —
even when their transition would also leave the winner's target state.

A refusal rolls back steps 3-4 (a savepoint) and records the code on the intent.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from apps.core import cel
from apps.core.actors import Actor
from apps.core.errors import ApplicationError, Conflict, Unprocessable
from apps.core.publish import publish, publish_on_commit
from apps.core.retention import RetentionPolicy, purge_policy
from apps.events.services.events import event_emit
from apps.observability import metrics
from apps.tenancy.models import Tenant
from apps.workflows import guards, tracking
from apps.workflows.models import IntentStatus, TransitionIntent, TransitionLog, WorkflowInstance
from apps.workflows.services.effects import effects_run

log = logging.getLogger(__name__)


def intent_create(
    *,
    instance: WorkflowInstance,
    transition: str,
    payload: Any = None,
    expected_state: str = "",
    if_version: int | None = None,
    actor: Actor,
    publish: bool = True,
) -> TransitionIntent:
    """Validates what does not depend on the state, then records a pending intent and its TaskExecution.

    The intent applies only to the instance at `if_version` (by default the version read now):
    versions only grow, so a pin the instance has already left is refused at once.
    """
    spec = instance.definition.parsed
    payload = {} if payload is None else payload
    try:
        found = guards.find_transition(spec, transition)
        guards.check_payload(found, payload)
        guards.check_scopes(found, actor.as_dict(scopes=True))
        if expected_state and expected_state not in spec.state_names:
            raise Unprocessable(
                f"{expected_state!r} is not a state of {spec.key!r}.",
                code="unknown_state",
                fields={"expected_state": ["Unknown state."]},
            )
        if if_version is not None and if_version != instance.version:
            raise version_conflict(instance=instance, observed_version=if_version)
    except ApplicationError as exc:
        metrics.TRANSITIONS.labels(stage="request", outcome=exc.code).inc()
        raise
    with transaction.atomic():
        intent = TransitionIntent.objects.create(
            tenant=instance.tenant,
            instance=instance,
            transition=transition,
            payload=payload,
            expected_state=expected_state,
            observed_version=instance.version if if_version is None else if_version,
            actor=actor.as_dict(scopes=True),
        )
        intent.task_execution_id = tracking.execution_create(
            tenant=instance.tenant,
            actor=actor,
            input={
                "intent_id": str(intent.pk),
                "workflow": instance.workflow_key,
                "subject": instance.subject,
                "transition": transition,
                "payload": payload,
                "expected_state": expected_state or None,
                "if_version": intent.observed_version,
            },
        )
        intent.save(update_fields=["task_execution_id"])
        if publish:
            _publish(intent)
    metrics.INTENTS.labels(kind="transition").inc()
    return intent


def _publish(intent: TransitionIntent) -> None:
    publish_on_commit("signalbox.workflows.apply_transition", str(intent.pk), queue="transitions")


def version_conflict(*, instance: WorkflowInstance, observed_version: int) -> Conflict:
    """The refusal of an intent pinned to a version the instance has left: names what won and where it is now."""
    fields = {"if_version": [f"The instance is at version {instance.version}, in state {instance.state!r}."]}
    if observed_version > instance.version:  # only a client's if_version can be ahead
        return Conflict(
            f"The instance is at version {instance.version} (in {instance.state!r}), not {observed_version}.",
            code="conflict",
            fields=fields,
        )
    winner = (
        TransitionLog.objects.filter(instance_id=instance.pk, instance_version=observed_version + 1)
        .values_list("transition", flat=True)
        .first()
    )
    won_by = f"{winner!r} was applied first" if winner else "another transition was applied first"
    return Conflict(
        f"The instance left version {observed_version}: {won_by}, and it is now in {instance.state!r} "
        f"at version {instance.version}.",
        code="conflict",
        fields=fields,
    )


def _apply(intent: TransitionIntent) -> tuple[TransitionLog, WorkflowInstance]:
    instance = WorkflowInstance.objects.select_related("definition", "tenant").get(pk=intent.instance_id)
    spec = instance.definition.parsed
    transition = guards.find_transition(spec, intent.transition)
    if intent.expected_state and instance.state != intent.expected_state:
        raise Conflict(
            f"The instance is in {instance.state!r}, not the expected {intent.expected_state!r}.", code="conflict"
        )
    # Checked before the source state: a transition that also leaves the winner's target state must
    # still lose, or two intents accepted at one version would both apply.
    if instance.version != intent.observed_version:
        raise version_conflict(instance=instance, observed_version=intent.observed_version)
    guards.check_scopes(transition, intent.actor)
    guards.check_source(spec, transition, instance.state)
    variables = guards.guard_variables(
        state=instance.state,
        data=instance.data,
        payload=intent.payload,
        subject=instance.subject,
        actor=intent.actor,
    )
    guards.check_conditions(transition, variables)
    data = dict(instance.data)
    for name, expression in transition.set.items():
        try:
            data[name] = cel.evaluate(expression, variables)
        except cel.CelError as exc:
            raise Unprocessable(f"set.{name} of {transition.name!r} failed: {exc.message}", code="set_failed") from exc

    now = timezone.now()
    won = WorkflowInstance.objects.filter(pk=instance.pk, version=intent.observed_version, state=instance.state).update(
        state=transition.target, data=data, version=F("version") + 1, updated_at=now
    )
    if won != 1:  # a concurrent transition committed between our read and our UPDATE
        instance.refresh_from_db(fields=["state", "version"])
        raise version_conflict(instance=instance, observed_version=intent.observed_version)
    from_state = instance.state
    instance.state, instance.data, instance.version, instance.updated_at = (
        transition.target,
        data,
        instance.version + 1,
        now,
    )
    entry = TransitionLog.objects.create(
        tenant_id=instance.tenant_id,
        instance=instance,
        intent=intent,
        intent_ref=intent.pk,
        transition=transition.name,
        from_state=from_state,
        to_state=transition.target,
        actor=intent.actor,
        payload=intent.payload,
        instance_version=instance.version,
    )
    after = {**variables, "data": data, "state": transition.target}
    after["transition"] = {"name": transition.name, "from": from_state, "to": transition.target}
    effects_run(effects=transition.effects, instance=instance, log=entry, variables=after)
    event_emit(
        tenant=instance.tenant,
        type="transition.applied",
        subject=instance.subject,
        payload={
            "workflow": instance.workflow_key,
            "workflow_version": instance.definition.version,
            "instance_id": str(instance.pk),
            "transition": transition.name,
            "from": from_state,
            "to": transition.target,
            "payload": intent.payload,
            "intent_id": str(intent.pk),
            "instance_version": instance.version,
        },
        actor=intent.actor,
    )
    return entry, instance


def log_result(entry: TransitionLog, instance: WorkflowInstance) -> dict[str, Any]:
    return {
        "workflow": instance.workflow_key,
        "subject": instance.subject,
        "transition": entry.transition,
        "from": entry.from_state,
        "to": entry.to_state,
        "instance_version": entry.instance_version,
        "log_id": entry.pk,
    }


def intent_apply(*, intent_id: Any) -> TransitionIntent:
    """Applies a pending intent (see the module docstring); returns it applied or refused."""
    with transaction.atomic():
        intent = TransitionIntent.objects.select_for_update(of=("self",)).select_related("instance").get(pk=intent_id)
        if intent.status != IntentStatus.PENDING:
            return intent
        if not tracking.execution_start(intent.task_execution_id):
            _finish(intent, IntentStatus.REFUSED, error=Conflict("The intent was cancelled.", code="cancelled"))
            return intent
        try:
            with transaction.atomic():  # a savepoint: a refusal undoes the state change and effects
                entry, instance = _apply(intent)
        except ApplicationError as exc:
            _finish(intent, IntentStatus.REFUSED, error=exc)
            tracking.execution_fail(intent.task_execution_id, code=exc.code, message=exc.message)
            metrics.TRANSITIONS.labels(stage="apply", outcome=exc.code).inc()
            return intent
        _finish(intent, IntentStatus.APPLIED)
        tracking.execution_succeed(intent.task_execution_id, result=log_result(entry, instance))
        metrics.TRANSITIONS.labels(stage="apply", outcome="applied").inc()
    return intent


def _finish(intent: TransitionIntent, status: str, *, error: ApplicationError | None = None) -> None:
    intent.status = status
    intent.finished_at = timezone.now()
    if error is not None:
        intent.error_code, intent.error_message, intent.error_fields = error.code, error.message, error.fields
    intent.save(update_fields=["status", "finished_at", "error_code", "error_message", "error_fields"])


def intents_sweep(*, older_than_seconds: int = 120, limit: int = 1000) -> int:
    """Republishes intents committed but never applied (a lost publish, a worker that died)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        TransitionIntent.objects.filter(status=IntentStatus.PENDING, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )
    for pk in ids:
        publish("signalbox.workflows.apply_transition", str(pk), queue="transitions")
    if ids:
        metrics.SWEEPER_RECOVERED.labels(kind="transition_intent").inc(len(ids))
    return len(ids)


def _intent_model() -> type[TransitionIntent]:
    return TransitionIntent


def intents_retention_policy() -> RetentionPolicy:
    """Finished intents go after `retention_days["transition_intents"]`, else SIGNALBOX_EVENT_RETENTION_DAYS.

    The transition log and the instances are the history and are kept.
    """
    return RetentionPolicy(
        name="transition_intents",
        model=_intent_model,
        default_days=settings.SIGNALBOX_EVENT_RETENTION_DAYS,
        keep=lambda: models.Q(status=IntentStatus.PENDING),
    )


def intents_purge(*, max_seconds: float = 240.0) -> int:
    purged, _ = purge_policy(intents_retention_policy(), tenants=Tenant.objects.all(), max_seconds=max_seconds)
    return purged
