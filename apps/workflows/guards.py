"""Whether a transition may be taken: source state, the caller's scopes, CEL conditions, payload schema.

The same checks serve the apply path (apps/workflows/services/transitions.py) and the list of
transitions a caller can take now (selectors). Each refusal is an `ApplicationError` with a
stable code:

| code | status | meaning |
|---|---|---|
| unknown_transition | 422 | the instance's definition version has no such transition |
| invalid_payload | 422 | the payload breaks the transition's JSON Schema (`fields` say where) |
| transition_forbidden | 403 | the API key lacks a scope the guard requires |
| invalid_source_state | 409 | the transition does not leave the instance's current state |
| guard_failed | 422 | a CEL condition is false (or cannot be evaluated) |
| conflict | 409 | the instance changed under the intent: `expected_state` differs, or it left the intent's version |
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from apps.core import cel
from apps.core.errors import ApplicationError, Conflict, Unprocessable
from apps.tenancy.models import Scope
from apps.workflows.spec import Transition, WorkflowSpec


def guard_variables(
    *, state: str, data: dict[str, Any], payload: dict[str, Any], subject: dict[str, str], actor: dict[str, Any]
) -> dict[str, Any]:
    return {
        "state": state,
        "data": data,
        "payload": payload,
        "subject": subject,
        "actor": {k: actor.get(k) for k in ("type", "id", "name", "scopes")},
    }


def find_transition(spec: WorkflowSpec, name: str) -> Transition:
    transition = spec.transition(name)
    if transition is None:
        known = ", ".join(t.name for t in spec.transitions)
        raise Unprocessable(
            f"No transition {name!r} in {spec.key!r}; known: {known}.",
            code="unknown_transition",
            fields={"transition": [f"Unknown transition {name!r}."]},
        )
    return transition


def check_payload(transition: Transition, payload: Any) -> None:
    if not isinstance(payload, dict):
        raise Unprocessable("The payload is a JSON object.", code="invalid_payload", fields={"payload": ["Object."]})
    if transition.payload_schema is None:
        return
    errors = sorted(Draft202012Validator(transition.payload_schema).iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        fields: dict[str, list[str]] = {}
        for error in errors:
            where = ".".join(["payload", *(str(p) for p in error.path)])
            fields.setdefault(where, []).append(error.message)
        raise Unprocessable(
            f"The payload does not match the schema of {transition.name!r}.", code="invalid_payload", fields=fields
        )


def actor_has_scope(actor: dict[str, Any], scope: str) -> bool:
    """ApiKey.has_scope for a stored actor (`Actor.as_dict(scopes=True)`)."""
    scopes = actor.get("scopes") or []
    if Scope.ALL.value in scopes:
        return True
    if scope == Scope.READ.value:
        return bool(scopes)
    return scope in scopes


def missing_scopes(actor: dict[str, Any], required: tuple[str, ...]) -> list[str]:
    return [s for s in required if not actor_has_scope(actor, s)]


def check_scopes(transition: Transition, actor: dict[str, Any]) -> None:
    missing = missing_scopes(actor, transition.guard.scopes)
    if missing:
        raise ApplicationError(
            f"{transition.name!r} needs the scope(s) {', '.join(missing)}.",
            code="transition_forbidden",
            status_code=403,
            fields={"scopes": missing},
        )


def check_source(spec: WorkflowSpec, transition: Transition, state: str) -> None:
    if not transition.leaves(state, spec.finals):
        where = "the final state" if state in spec.finals else "state"
        sources = "any non-final state" if "*" in transition.sources else ", ".join(transition.sources)
        raise Conflict(
            f"{transition.name!r} does not leave {where} {state!r} (it leaves {sources}).",
            code="invalid_source_state",
        )


def check_conditions(transition: Transition, variables: dict[str, Any], *, defer_payload: bool = False) -> list[str]:
    """Raises `guard_failed` on the first false condition.

    With `defer_payload` (no payload yet: listing what a caller can do), a condition that reads
    the payload and is not already true without it is returned as deferred instead of failing.
    """
    deferred = []
    for condition in transition.guard.conditions:
        try:
            passed = cel.evaluate_condition(condition.expression, variables)
        except cel.CelError as exc:
            if defer_payload and cel.references(condition.expression, "payload"):
                deferred.append(condition.message or condition.expression)
                continue
            raise Unprocessable(
                f"The guard of {transition.name!r} could not be evaluated: {exc.message}",
                code="guard_failed",
                fields={"condition": [condition.expression]},
            ) from exc
        if not passed and defer_payload and cel.references(condition.expression, "payload"):
            deferred.append(condition.message or condition.expression)
            continue
        if not passed:
            raise Unprocessable(
                condition.message or f"The guard of {transition.name!r} is not met: {condition.expression}",
                code="guard_failed",
                fields={"condition": [condition.expression]},
            )
    return deferred


# The HTTP status of each refusal, for answers given after the fact (?wait=true, replays).
REFUSAL_STATUS = {
    "unknown_transition": 422,
    "invalid_payload": 422,
    "transition_forbidden": 403,
    "invalid_source_state": 409,
    "conflict": 409,
    "cancelled": 409,
    "guard_failed": 422,
    "set_failed": 422,
    "effect_failed": 422,
}
