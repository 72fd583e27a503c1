"""A workflow definition's document: parsed, validated and normalized before it is stored.

The same document comes from YAML/JSON files (`manage.py loadworkflow`), the API and Django admin:

    key: order
    states: [draft, submitted, approved, rejected, shipped]
    initial: draft
    finals: [rejected, shipped]
    transitions:
      - name: approve
        from: submitted            # a state, a list of states, or "*" (any non-final state)
        to: approved
        guard:
          scopes: [admin]          # API-key scopes the caller must hold
          conditions:              # CEL over data, payload, state, subject, actor
            - expression: data.total < 10000 || payload.override
              message: Orders over 10,000 need an override.
        payload_schema: {type: object, required: [note], properties: {note: {type: string}}}
        set: {approved_by: actor.id}          # data keys <- CEL
        effects:
          - {type: event, event_type: order.approved}
          - {type: notification, template: order-approved, recipients: [data.customer_id], watchers: true}
          - {type: task, task: invoice.create, params: {order: subject.id}}

`parse_spec` refuses anything that could not run: unknown or unreachable states, dead ends,
duplicate names, bad CEL, bad JSON Schemas, unknown scopes. Every problem is reported at once,
keyed by where it is (`transitions[2].to`). The stored form is `WorkflowSpec.to_dict()`.
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from apps.core import cel
from apps.core.errors import Unprocessable
from apps.events.actions import audience_conflict
from apps.tenancy.models import Scope

ANY_STATE = "*"
KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
# State names double as Mermaid and DOT identifiers: no hyphens.
STATE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
EVENT_TYPE_PATTERN = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_*-]+)*$")
EFFECT_FIELDS = {
    "event": ("type", "event_type"),
    "notification": ("type", "template", "recipients", "topic", "watchers", "data"),
    "task": ("type", "task", "params"),
}
EFFECT_TYPES = tuple(EFFECT_FIELDS)

# What CEL sees. Guards: before the transition. `set` and effects: after it (data updated).
GUARD_VARIABLES = ("data", "payload", "state", "subject", "actor")
EFFECT_VARIABLES = ("data", "payload", "state", "subject", "actor", "transition")


class InvalidDefinition(Unprocessable):
    code = "invalid_workflow"


@dataclass(frozen=True)
class Condition:
    expression: str
    message: str = ""


@dataclass(frozen=True)
class Guard:
    scopes: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Effect:
    type: str
    event_type: str = ""
    template: str = ""
    recipients: tuple[str, ...] = ()
    topic: str = ""
    watchers: bool = False
    task: str = ""
    params: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Transition:
    name: str
    sources: tuple[str, ...]
    target: str
    description: str = ""
    guard: Guard = field(default_factory=Guard)
    payload_schema: dict[str, Any] | None = None
    set: dict[str, str] = field(default_factory=dict)
    effects: tuple[Effect, ...] = ()

    def leaves(self, state: str, finals: tuple[str, ...]) -> bool:
        if ANY_STATE in self.sources:
            return state not in finals
        return state in self.sources


@dataclass(frozen=True)
class State:
    name: str
    description: str = ""


@dataclass(frozen=True)
class WorkflowSpec:
    key: str
    states: tuple[State, ...]
    initial: str
    finals: tuple[str, ...]
    transitions: tuple[Transition, ...]
    name: str = ""
    description: str = ""

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    def transition(self, name: str) -> Transition | None:
        return next((t for t in self.transitions if t.name == name), None)

    def transitions_from(self, state: str) -> list[Transition]:
        return [t for t in self.transitions if t.leaves(state, self.finals)]

    def to_dict(self) -> dict[str, Any]:
        """The normalized document, as stored in `WorkflowDefinition.spec`."""
        data = asdict(self)
        for t in data["transitions"]:
            t["from"] = list(t.pop("sources"))
            t["to"] = t.pop("target")
            # Only the fields of each effect's type, so a stored document is also a valid input.
            t["effects"] = [{k: v for k, v in e.items() if k in EFFECT_FIELDS[e["type"]]} for e in t["effects"]]
        normalized: dict[str, Any] = json.loads(json.dumps(data))  # tuples -> lists, as stored
        return normalized

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkflowSpec:
        """Rebuilds a stored (already validated) document."""
        return cls(
            key=data["key"],
            name=data.get("name", ""),
            description=data.get("description", ""),
            states=tuple(State(**s) for s in data["states"]),
            initial=data["initial"],
            finals=tuple(data["finals"]),
            transitions=tuple(
                Transition(
                    name=t["name"],
                    sources=tuple(t["from"]),
                    target=t["to"],
                    description=t.get("description", ""),
                    guard=Guard(
                        scopes=tuple(t["guard"]["scopes"]),
                        conditions=tuple(Condition(**c) for c in t["guard"]["conditions"]),
                    ),
                    payload_schema=t.get("payload_schema"),
                    set=dict(t.get("set") or {}),
                    effects=tuple(
                        Effect(**{**e, "recipients": tuple(e.get("recipients", ()))}) for e in t.get("effects", [])
                    ),
                )
                for t in data["transitions"]
            ),
        )


class _Problems:
    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}

    def add(self, where: str, message: str) -> None:
        self.fields.setdefault(where, []).append(message)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cel_map(value: Any, where: str, variables: tuple[str, ...], problems: _Problems) -> dict[str, str]:
    if value in (None, {}):
        return {}
    if not isinstance(value, dict):
        problems.add(where, "A mapping of names to CEL expressions.")
        return {}
    result = {}
    for name, expression in value.items():
        _cel(expression, f"{where}.{name}", variables, problems)
        result[str(name)] = str(expression)
    return result


def _cel(expression: Any, where: str, variables: tuple[str, ...], problems: _Problems) -> None:
    if not isinstance(expression, str):
        problems.add(where, "A CEL expression (a string).")
        return
    try:
        cel.check(expression, variables=variables)
    except cel.CelError as exc:
        problems.add(where, exc.message)


def _parse_effect(raw: Any, where: str, problems: _Problems) -> Effect | None:
    if not isinstance(raw, dict) or raw.get("type") not in EFFECT_TYPES:
        problems.add(where, f"An effect is a mapping with a type among {', '.join(EFFECT_TYPES)}.")
        return None
    kind = raw["type"]
    allowed = set(EFFECT_FIELDS[kind])
    for extra in sorted(set(raw) - allowed):
        problems.add(f"{where}.{extra}", f"Unknown field for a {kind} effect.")
    if kind == "event":
        event_type = raw.get("event_type")
        if not isinstance(event_type, str) or not EVENT_TYPE_PATTERN.match(event_type) or "*" in event_type:
            problems.add(f"{where}.event_type", "A dotted lower-case event type, e.g. order.approved.")
            return None
        return Effect(type=kind, event_type=event_type)
    if kind == "notification":
        template = raw.get("template")
        if not isinstance(template, str) or not template:
            problems.add(f"{where}.template", "The key of the notification template to send.")
        recipients = _as_list(raw.get("recipients"))
        topic = raw.get("topic") or ""
        watchers = raw.get("watchers", False)
        if not isinstance(watchers, bool):
            problems.add(f"{where}.watchers", "true or false.")
        if not recipients and not topic and not watchers:
            problems.add(where, "Name recipients (CEL such as data.customer_id), a topic, or watchers: true.")
        for i, expression in enumerate(recipients):
            _cel(expression, f"{where}.recipients[{i}]", EFFECT_VARIABLES, problems)
        if not isinstance(topic, str):
            problems.add(f"{where}.topic", "A topic key.")
        elif audience_conflict(recipients=recipients, topic=topic, watchers=watchers):
            problems.add(f"{where}.topic", "A topic, or recipients and watchers: not both.")
        data = _cel_map(raw.get("data"), f"{where}.data", EFFECT_VARIABLES, problems)
        return Effect(
            type=kind,
            template=str(template or ""),
            recipients=tuple(str(r) for r in recipients),
            topic=str(topic),
            watchers=watchers is True,
            data=data,
        )
    task = raw.get("task")
    if not isinstance(task, str) or not task:
        problems.add(f"{where}.task", "The name of the tracked task to start.")
    params = _cel_map(raw.get("params"), f"{where}.params", EFFECT_VARIABLES, problems)
    return Effect(type=kind, task=str(task or ""), params=params)


def _parse_guard(raw: Any, where: str, problems: _Problems) -> Guard:
    if raw in (None, {}):
        return Guard()
    if not isinstance(raw, dict):
        problems.add(where, "A mapping with scopes and/or conditions.")
        return Guard()
    for extra in sorted(set(raw) - {"scopes", "conditions"}):
        problems.add(f"{where}.{extra}", "Unknown guard field (use scopes, conditions).")
    scopes = [str(s) for s in _as_list(raw.get("scopes"))]
    valid = {s.value for s in Scope}
    for s in scopes:
        if s not in valid:
            problems.add(f"{where}.scopes", f"Unknown scope {s!r}; choose from {sorted(valid)}.")
    conditions = []
    for i, item in enumerate(_as_list(raw.get("conditions"))):
        spot = f"{where}.conditions[{i}]"
        if isinstance(item, str):
            item = {"expression": item}
        if not isinstance(item, dict) or set(item) - {"expression", "message"}:
            problems.add(spot, "A CEL expression, or a mapping with expression and message.")
            continue
        _cel(item.get("expression"), f"{spot}.expression", GUARD_VARIABLES, problems)
        conditions.append(Condition(expression=str(item.get("expression")), message=str(item.get("message") or "")))
    return Guard(scopes=tuple(sorted(set(scopes))), conditions=tuple(conditions))


def _parse_states(raw: Any, problems: _Problems) -> list[State]:
    states: list[State] = []
    if not isinstance(raw, list) or not raw:
        problems.add("states", "A non-empty list of states.")
        return states
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or set(item) - {"name", "description"}:
            problems.add(f"states[{i}]", "A state name, or a mapping with name and description.")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not STATE_PATTERN.match(name):
            problems.add(f"states[{i}].name", "Letters, digits and _, starting with a letter (at most 64).")
            continue
        if any(s.name == name for s in states):
            problems.add(f"states[{i}].name", f"Duplicate state {name!r}.")
            continue
        states.append(State(name=name, description=str(item.get("description") or "")))
    return states


def _parse_transition(raw: Any, i: int, names: set[str], problems: _Problems) -> Transition | None:
    where = f"transitions[{i}]"
    if not isinstance(raw, dict):
        problems.add(where, "A mapping with name, from and to.")
        return None
    known = {"name", "from", "to", "description", "guard", "payload_schema", "set", "effects"}
    for extra in sorted(set(raw) - known):
        problems.add(f"{where}.{extra}", "Unknown transition field.")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.add(f"{where}.name", "Letters, digits, _ and -, starting with a letter (at most 64).")
        return None
    sources = [str(s) for s in _as_list(raw.get("from"))]
    if not sources:
        problems.add(f"{where}.from", "One or more source states, or '*'.")
    if ANY_STATE in sources and len(sources) > 1:
        problems.add(f"{where}.from", "'*' stands alone: it already means every non-final state.")
    for s in sources:
        if s != ANY_STATE and s not in names:
            problems.add(f"{where}.from", f"Unknown state {s!r}.")
    target = raw.get("to")
    if not isinstance(target, str) or target not in names:
        problems.add(f"{where}.to", f"Unknown target state {target!r}.")
    schema = raw.get("payload_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            problems.add(f"{where}.payload_schema", "A JSON Schema (an object).")
        else:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                problems.add(f"{where}.payload_schema", f"Not a valid JSON Schema: {exc.message}")
    effects = []
    for j, item in enumerate(_as_list(raw.get("effects"))):
        effect = _parse_effect(item, f"{where}.effects[{j}]", problems)
        if effect is not None:
            effects.append(effect)
    return Transition(
        name=name,
        sources=tuple(dict.fromkeys(sources)),
        target=str(target),
        description=str(raw.get("description") or ""),
        guard=_parse_guard(raw.get("guard"), f"{where}.guard", problems),
        payload_schema=schema if isinstance(schema, dict) else None,
        set=_cel_map(raw.get("set"), f"{where}.set", GUARD_VARIABLES, problems),
        effects=tuple(effects),
    )


def _check_graph(spec: WorkflowSpec, problems: _Problems) -> None:
    reachable = {spec.initial}
    queue = deque([spec.initial])
    while queue:
        state = queue.popleft()
        for t in spec.transitions_from(state):
            if t.target not in reachable:
                reachable.add(t.target)
                queue.append(t.target)
    for state in spec.state_names:
        if state not in reachable:
            problems.add("states", f"State {state!r} cannot be reached from {spec.initial!r}.")
        elif state not in spec.finals and not spec.transitions_from(state):
            problems.add("states", f"State {state!r} is not final and no transition leaves it.")
    for i, t in enumerate(spec.transitions):
        for s in t.sources:
            if s in spec.finals:
                problems.add(f"transitions[{i}].from", f"{s!r} is final: no transition leaves a final state.")


def parse_spec(document: Any) -> WorkflowSpec:
    """Validates a definition document; raises `InvalidDefinition` listing every problem."""
    problems = _Problems()
    if not isinstance(document, dict):
        raise InvalidDefinition("A workflow definition is a mapping.", fields={"": ["Expected a mapping."]})
    known = {"key", "name", "description", "states", "initial", "finals", "transitions"}
    for extra in sorted(set(document) - known):
        problems.add(extra, "Unknown field.")
    key = document.get("key")
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        problems.add("key", "Lower-case letters, digits, _ and -, at most 64 (e.g. order).")
    states = _parse_states(document.get("states"), problems)
    names = {s.name for s in states}
    initial = document.get("initial")
    if not isinstance(initial, str) or initial not in names:
        problems.add("initial", f"Unknown initial state {initial!r}.")
    finals = [str(f) for f in _as_list(document.get("finals"))]
    for f in finals:
        if f not in names:
            problems.add("finals", f"Unknown state {f!r}.")
    if initial in finals:
        problems.add("finals", "The initial state cannot be final.")
    transitions = []
    raw_transitions = document.get("transitions")
    if not isinstance(raw_transitions, list) or not raw_transitions:
        problems.add("transitions", "A non-empty list of transitions.")
        raw_transitions = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_transitions):
        t = _parse_transition(raw, i, names, problems)
        if t is None:
            continue
        if t.name in seen:
            problems.add(f"transitions[{i}].name", f"Duplicate transition name {t.name!r}.")
            continue
        seen.add(t.name)
        transitions.append(t)
    if problems.fields:
        raise InvalidDefinition("The workflow definition is invalid; see fields.", fields=problems.fields)
    spec = WorkflowSpec(
        key=str(key),
        name=str(document.get("name") or ""),
        description=str(document.get("description") or ""),
        states=tuple(states),
        initial=str(initial),
        finals=tuple(dict.fromkeys(finals)),
        transitions=tuple(transitions),
    )
    _check_graph(spec, problems)
    if problems.fields:
        raise InvalidDefinition("The workflow definition is invalid; see fields.", fields=problems.fields)
    return spec
