"""Rules: when an event of a type (and optionally a CEL condition) happens, send a notification,
start a tracked task, or call a webhook endpoint.

Actions (a list, run in order; each in its own savepoint, so one failing does not undo the others):

    {"type": "notification", "template": "ticket-assigned",
     "recipients": ["event.payload.assignee_id"],          # CEL: a string or a list of strings
     "watchers": true,                                     # and whoever watches the event's subject
     "data": {"ticket": "event.subject.id"}}               # data: name -> CEL (template context)
    {"type": "notification", "template": "digest", "topic": "ops"}  # or a topic (not with recipients)
    {"type": "task", "task": "tickets.escalate", "params": {"ticket": "event.subject.id"}}
    {"type": "webhook", "endpoint_id": "<uuid>"}           # signed, retried like any webhook

CEL sees one variable, `event`: {id, type, subject: {type, id}, payload, actor, source, created_at}.
Every rule whose type matched is logged as a `RuleExecution` with its outcome.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.core import cel
from apps.core.actors import SYSTEM, Actor
from apps.core.errors import ApplicationError, Unprocessable
from apps.events import actions, types
from apps.events.models import Event, Rule, RuleExecution, RuleOutcome, WebhookEndpoint
from apps.events.services.watchers import watchers_of
from apps.events.services.webhooks import message_for_endpoint
from apps.observability.audit import audit_record

log = logging.getLogger(__name__)

RULE_VARIABLES = ("event",)
ACTION_TYPES = ("notification", "task", "webhook")


class InvalidRule(Unprocessable):
    code = "invalid_rule"


def _cel_or_problem(expression: Any, where: str, problems: dict[str, list[str]]) -> str:
    if not isinstance(expression, str):
        problems.setdefault(where, []).append("A CEL expression (a string).")
        return ""
    try:
        cel.check(expression, variables=RULE_VARIABLES)
    except cel.CelError as exc:
        problems.setdefault(where, []).append(exc.message)
    return expression


def _cel_map(value: Any, where: str, problems: dict[str, list[str]]) -> dict[str, str]:
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        problems.setdefault(where, []).append("A mapping of names to CEL expressions.")
        return {}
    return {str(k): _cel_or_problem(v, f"{where}.{k}", problems) for k, v in value.items()}


def _check_action(raw: Any, where: str, tenant: Any, problems: dict[str, list[str]]) -> dict[str, Any] | None:
    if not isinstance(raw, dict) or raw.get("type") not in ACTION_TYPES:
        problems.setdefault(where, []).append(f"An action is a mapping with a type among {', '.join(ACTION_TYPES)}.")
        return None
    kind = raw["type"]
    allowed = {
        "notification": {"type", "template", "recipients", "topic", "watchers", "data"},
        "task": {"type", "task", "params"},
        "webhook": {"type", "endpoint_id"},
    }[kind]
    for extra in sorted(set(raw) - allowed):
        problems.setdefault(f"{where}.{extra}", []).append(f"Unknown field for a {kind} action.")
    if kind == "notification":
        template = raw.get("template")
        if not isinstance(template, str) or not template:
            problems.setdefault(f"{where}.template", []).append("The key of the template to send.")
        recipients = raw.get("recipients") or []
        if isinstance(recipients, str):
            recipients = [recipients]
        topic = raw.get("topic") or ""
        watchers = raw.get("watchers", False)
        if not isinstance(watchers, bool):
            problems.setdefault(f"{where}.watchers", []).append("true or false.")
        if not recipients and not topic and not watchers:
            problems.setdefault(where, []).append(
                "Name recipients (CEL, e.g. event.payload.user_id), a topic, or watchers: true."
            )
        elif actions.audience_conflict(recipients=recipients, topic=topic, watchers=watchers):
            problems.setdefault(f"{where}.topic", []).append(actions.AUDIENCE_CONFLICT)
        return {
            "type": kind,
            "template": template,
            "recipients": [_cel_or_problem(r, f"{where}.recipients[{i}]", problems) for i, r in enumerate(recipients)],
            "topic": str(topic),
            "watchers": watchers is True,
            "data": _cel_map(raw.get("data"), f"{where}.data", problems),
        }
    if kind == "task":
        task = raw.get("task")
        if not isinstance(task, str) or not task:
            problems.setdefault(f"{where}.task", []).append("The name of the tracked task to start.")
        return {"type": kind, "task": task, "params": _cel_map(raw.get("params"), f"{where}.params", problems)}
    endpoint_id = raw.get("endpoint_id")
    try:
        exists = WebhookEndpoint.objects.filter(tenant=tenant, pk=uuid.UUID(str(endpoint_id))).exists()
    except ValueError:
        exists = False
    if not exists:
        problems.setdefault(f"{where}.endpoint_id", []).append("No such webhook endpoint.")
    return {"type": kind, "endpoint_id": str(endpoint_id)}


def rule_check(*, tenant: Any, event_type: Any, condition: Any, actions: Any) -> dict[str, Any]:
    """Validates a rule's parts; returns them normalized or raises `InvalidRule` with every problem."""
    problems: dict[str, list[str]] = {}
    try:
        types.check_pattern(event_type)
    except ApplicationError as exc:
        problems.update(exc.fields)
    condition = condition or ""
    if condition:
        _cel_or_problem(condition, "condition", problems)
    checked = []
    if not isinstance(actions, list) or not actions:
        problems.setdefault("actions", []).append("A non-empty list of actions.")
        actions = []
    for i, raw in enumerate(actions):
        action = _check_action(raw, f"actions[{i}]", tenant, problems)
        if action is not None:
            checked.append(action)
    if problems:
        raise InvalidRule("The rule is invalid; see fields.", fields=problems)
    return {"event_type": event_type, "condition": condition, "actions": checked}


@transaction.atomic
def rule_create(
    *,
    tenant: Any,
    name: str,
    event_type: str,
    actions: list[Any],
    condition: str = "",
    description: str = "",
    enabled: bool = True,
    actor: Actor = SYSTEM,
) -> Rule:
    checked = rule_check(tenant=tenant, event_type=event_type, condition=condition, actions=actions)
    rule = Rule.objects.create(tenant=tenant, name=name, description=description, enabled=enabled, **checked)
    audit_record(action="rule.created", tenant=tenant, actor=actor, target=rule, data={"name": name, **checked})
    return rule


@transaction.atomic
def rule_update(*, rule: Rule, actor: Actor = SYSTEM, **changes: Any) -> Rule:
    merged = {
        "event_type": changes.get("event_type", rule.event_type),
        "condition": changes.get("condition", rule.condition),
        "actions": changes.get("actions", rule.actions),
    }
    checked = rule_check(tenant=rule.tenant, **merged)
    for name in ("name", "description", "enabled"):
        if name in changes:
            setattr(rule, name, changes[name])
    for name, value in checked.items():
        setattr(rule, name, value)
    rule.save()
    audit_record(action="rule.updated", tenant=rule.tenant, actor=actor, target=rule, data=_jsonable(changes))
    return rule


@transaction.atomic
def rule_delete(*, rule: Rule, actor: Actor = SYSTEM) -> None:
    audit_record(action="rule.deleted", tenant=rule.tenant, actor=actor, target=rule, data={"name": rule.name})
    rule.delete()


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in changes.items() if isinstance(v, (str, int, bool, list, dict, type(None)))}


def event_variables(event: Event) -> dict[str, Any]:
    return {
        "event": {
            "id": str(event.pk),
            "type": event.type,
            "subject": event.subject,
            "payload": event.payload,
            "actor": event.actor,
            "source": event.source,
            "created_at": event.created_at.isoformat() if event.created_at else "",
        }
    }


def recipients_from(expressions: list[str], variables: dict[str, Any]) -> list[Any]:
    """Evaluates recipient expressions; each gives one recipient or a list; nulls are dropped."""
    found: list[Any] = []
    for expression in expressions:
        value = cel.evaluate(expression, variables)
        for item in value if isinstance(value, list) else [value]:
            if item not in (None, "") and item not in found:
                found.append(item)
    return found


def action_key(*, rule_id: Any, event_id: Any, index: int) -> str:
    """The idempotency key of a rule's action on an event: a redelivered event starts nothing twice."""
    return f"rule:{rule_id}:{event_id}:{index}"


def depth_after_action(idempotency_key: str | None) -> int:
    """For a task a rule's action started (known by its `action_key`): one more than the depth of
    the event the rule ran on; 0 for anything else."""
    parts = (idempotency_key or "").split(":")
    if len(parts) != 4 or parts[0] != "rule":
        return 0
    try:
        depth = Event.objects.filter(pk=parts[2]).values_list("depth", flat=True).first()
    except (ValueError, ValidationError):
        return 0
    return 0 if depth is None else depth + 1


def _run_action(
    *, rule: Rule, event: Event, index: int, action: dict[str, Any], variables: dict[str, Any]
) -> dict[str, Any]:
    """Runs one action; returns {status: done, ref} or {status: skipped, reason}."""
    source = {"kind": "rule", "rule_id": str(rule.pk), "event_id": str(event.pk), "depth": event.depth + 1}
    key = action_key(rule_id=rule.pk, event_id=event.pk, index=index)
    if action["type"] == "notification":
        recipients = recipients_from(action.get("recipients", []), variables)
        if action.get("watchers"):
            recipients += [w for w in watchers_of(tenant=event.tenant_id, subject=event.subject) if w not in recipients]
        if not recipients and not action.get("topic"):
            if action.get("watchers") and not action.get("recipients"):
                return {"status": "skipped", "reason": "The subject has no watchers."}
            raise ApplicationError("The recipient expressions gave no recipient.", code="no_recipients")
        data = {k: cel.evaluate(v, variables) for k, v in action.get("data", {}).items()} or variables
        ref = actions.send_notification(
            tenant=rule.tenant,
            template=action["template"],
            recipients=recipients,
            topic=action.get("topic", ""),
            data=data,
            idempotency_key=key,
            source=source,
        )
        return {"status": "done", "ref": ref}
    if action["type"] == "task":
        params = {k: cel.evaluate(v, variables) for k, v in action.get("params", {}).items()}
        ref = actions.start_task(
            tenant=rule.tenant, task=action["task"], params=params, idempotency_key=key, source=source
        )
        return {"status": "done", "ref": ref}
    message = message_for_endpoint(event=event, endpoint_id=action["endpoint_id"])
    return {"status": "done", "ref": str(message.pk)}


def _run_rule(rule: Rule, event: Event, variables: dict[str, Any]) -> None:
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    outcome, error = RuleOutcome.SUCCEEDED, ""
    try:
        matched = cel.evaluate_condition(rule.condition, variables) if rule.condition else True
    except cel.CelError as exc:
        outcome, error, matched = RuleOutcome.ERROR, exc.message, False
    if matched:
        for index, action in enumerate(rule.actions):
            try:
                with transaction.atomic():  # a savepoint: a failed action leaves no half-written rows
                    done = _run_action(rule=rule, event=event, index=index, action=action, variables=variables)
                results.append({"type": action["type"], **done})
            except (ApplicationError, cel.CelError) as exc:
                code = getattr(exc, "code", "cel_error")
                results.append({"type": action["type"], "status": "failed", "code": code, "error": exc.message})
            except Exception as exc:  # a bug in an action must not stop the other rules
                log.exception("rule action crashed", extra={"rule": str(rule.pk), "event": str(event.pk)})
                results.append(
                    {"type": action["type"], "status": "failed", "code": "internal_error", "error": str(exc)}
                )
        if any(r["status"] == "failed" for r in results):
            outcome = RuleOutcome.FAILED
    elif outcome != RuleOutcome.ERROR:
        outcome = RuleOutcome.SKIPPED
    RuleExecution.objects.create(
        tenant_id=event.tenant_id,
        rule=rule,
        event=event,
        outcome=outcome,
        actions=results,
        error=error,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


def rules_run(*, event: Event) -> int:
    """Runs every enabled rule of the event's tenant whose type pattern matches; returns how many.

    An event that `SIGNALBOX_RULE_MAX_DEPTH` rule actions led to runs none (each is logged as
    skipped): a rule that notifies on `delivery.sent`, or starts a task on `task.succeeded`,
    would otherwise feed itself for ever.
    """
    variables = event_variables(event)
    looping = event.depth >= settings.SIGNALBOX_RULE_MAX_DEPTH
    ran = 0
    for rule in Rule.objects.filter(tenant_id=event.tenant_id, enabled=True).select_related("tenant"):
        if not types.type_matches(rule.event_type, event.type):
            continue
        if looping:
            RuleExecution.objects.create(
                tenant_id=event.tenant_id,
                rule=rule,
                event=event,
                outcome=RuleOutcome.SKIPPED,
                error=(
                    f"Loop guard: {event.depth} rule actions led to this event "
                    f"(SIGNALBOX_RULE_MAX_DEPTH={settings.SIGNALBOX_RULE_MAX_DEPTH}); its rules do not run."
                ),
            )
            continue
        _run_rule(rule, event, variables)
        ran += 1
    return ran
