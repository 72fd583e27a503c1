"""A flow document: parsed, validated and expanded into the steps the engine runs.

A document is `{"key", "name"?, "template"?, "cancel_on"?, "steps": [...]}`. Each step has an
`id` (letters, digits, `_`, `-`) and a `type`:

- `send`: `{"channels": [...]}` — the notification's content for each, through the fan-out rules;
- `delay`: `{"duration": "30m"}` or `{"until": "09:00"}` (the next such local time of the recipient);
- `digest`: `{"window_minutes": n, "key"?: jinja}` — the next step (a send) collects into digest windows;
- `branch`: `{"if": condition, "then": id, "else": id, "wait"?: duration}` — with `wait`, the
  branch waits up to that long for the condition to become true (woken by outcomes and reads);
- `fallback`: `{"channels": [a, b, ...], "on"?: [states], "wait"?: duration}` — send `a`; if its
  delivery ends in one of `on` (default: bounced, dead, failed, suppressed) within `wait`
  (default 1 h), send `b`; and so on. Expanded into send and branch steps;
- `exit`.

`next` (a step id) overrides the following step; the last step ends the run. A condition is
`{"channel": c, "state": s | [s, ...]}` (this recipient's delivery on that channel: `read`,
`seen`, `opened`, `clicked`, `delivered`, `sent`, `bounced`, `dead`, `failed`, `suppressed`,
`cancelled`, `missing`), or `{"cel": "payload.total > 100"}` over `payload` and `recipient`.

A notification delivers each channel at most once per recipient (one delivery per notification,
recipient and channel), so a channel appears in one send of a flow; that is also what makes a
send step safe to run twice.

Refusals come in two classes (docs/architecture.md, "The schema tells the truth"): a document that
breaks the shape the OpenAPI schema gives it (`apps/flows/serializers.py` documents this parser) is
400; a well-formed one refused by a rule the schema cannot express — an id used twice or naming no
step, a delay with neither or both of `duration` and `until`, a digest not followed by a send, a CEL
expression that does not compile, the graph — is 422 (`Refused.status`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Any

from apps.core import cel
from apps.notifications import rendering

STEP_TYPES = ("send", "delay", "digest", "branch", "fallback", "exit")
STATES = (
    "read",
    "seen",
    "opened",
    "clicked",
    "delivered",
    "sent",
    "bounced",
    "dead",
    "failed",
    "suppressed",
    "cancelled",
    "missing",
)
FAILED_STATES = ["bounced", "dead", "failed", "suppressed"]
DEFAULT_FALLBACK_WAIT = 3600
MAX_STEPS = 100
MAX_DURATION = 90 * 86400
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DURATION_RE = re.compile(r"^([0-9]+)\s*([smhd])$")
TIME_OF_DAY_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CEL_VARIABLES = ("payload", "recipient")


@dataclass
class Refused:
    """Field errors (`steps[2].channels`: [...]) and their class: 400 the shape, 422 a rule."""

    status: int
    fields: dict[str, list[str]]


@dataclass
class Parsed:
    key: str
    name: str
    template: str
    cancel_on: dict[str, str] | None
    steps: list[dict[str, Any]]  # expanded: every step has id, type and its targets resolved

    @property
    def channels(self) -> list[str]:
        seen: list[str] = []
        for step in self.steps:
            if step["type"] == "send":
                seen.extend(c for c in step["channels"] if c not in seen)
        return seen


def parse_duration(value: Any) -> int | None:
    """Seconds from `90`, `"30s"`, `"10m"`, `"2h"`, `"1d"`; None when it is none of those."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := DURATION_RE.match(value.strip())):
        seconds = int(match.group(1)) * UNITS[match.group(2)]
    else:
        return None
    return seconds if 0 < seconds <= MAX_DURATION else None


def parse_time_of_day(value: Any) -> time | None:
    """A local time from `"HH:MM"` (the documented form; the schema's pattern is TIME_OF_DAY_RE)."""
    if not isinstance(value, str) or not TIME_OF_DAY_RE.fullmatch(value):
        return None
    return time.fromisoformat(value)


def _channels(value: Any, where: str, errors: dict[str, list[str]]) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        errors[where] = ["A non-empty list of channels."]
        return []
    unknown = [c for c in value if c not in rendering.CHANNELS]
    if unknown:
        errors[where] = [f"Unknown channel(s): {', '.join(unknown)}; use {', '.join(rendering.CHANNELS)}."]
        return []
    if len(set(value)) != len(value):
        errors[where] = ["A channel is listed twice."]
        return []
    return list(value)


def _condition(value: Any, where: str, at: _At) -> dict[str, Any] | None:
    errors = at.errors
    if not isinstance(value, dict):
        errors[where] = ['An object: {"channel", "state"} or {"cel"}.']
        return None
    if "cel" in value:
        source = value["cel"]
        if not isinstance(source, str):
            errors[f"{where}.cel"] = ["A CEL expression."]
            return None
        try:
            cel.check(source, variables=CEL_VARIABLES)
        except cel.CelError as exc:  # well-formed text; the schema cannot say what compiles
            at.rules[f"{where}.cel"] = [exc.message]
            return None
        return {"cel": source}
    channel, state = value.get("channel"), value.get("state")
    if channel not in rendering.CHANNELS:
        errors[f"{where}.channel"] = [f"Unknown channel {channel!r}; use {', '.join(rendering.CHANNELS)}."]
        return None
    states = [state] if isinstance(state, str) else state
    if not isinstance(states, list) or not states or any(s not in STATES for s in states):
        errors[f"{where}.state"] = [f"A state or a list of states from {', '.join(STATES)}."]
        return None
    return {"channel": channel, "state": list(states)}


def _target(value: Any, where: str, at: _At) -> str | None:
    """A step id, or None for null; malformed is a shape error, an id of no step a rule error."""
    if value is None:
        return None
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        at.errors[where] = ["A step id: letters, digits, `_` and `-`, at most 64."]
        return None
    if value not in at.known:
        at.rules[where] = [f"No step {value!r} in this flow."]
        return None
    return value


def parse(document: Any) -> tuple[Parsed | None, Refused | None]:
    """The document expanded, or None and why.

    In order: the document's own fields, the steps' ids and types, each step by its type (a
    fallback expanded into sends and branches), then the graph (loops, unreachable steps, a
    channel sent twice, conditions on channels no step sends). Each stage stops at its errors;
    shape errors (400) go before rule errors (422), which are only checked on a well-formed document."""
    if not isinstance(document, dict):
        return None, Refused(400, {"non_field_errors": ["A JSON object."]})
    errors: dict[str, list[str]] = {}
    rules: dict[str, list[str]] = {}
    header = _header(document, errors)
    raw = _step_list(document.get("steps"), errors)
    if raw is None:
        return None, Refused(400, errors)
    known = _step_ids(raw, errors, rules)
    if errors:
        return None, Refused(400, errors)
    expanded: list[dict[str, Any]] = []
    for index, step in enumerate(raw):
        expanded.extend(_PARSERS[step["type"]](step, _At.of(raw, index, known, errors, rules)))
    if errors or rules:
        return None, Refused(400, errors) if errors else Refused(422, rules)
    _check_graph(expanded, rules)
    if rules:
        return None, Refused(422, rules)
    return Parsed(steps=expanded, **header), None


# --- The document's own fields -------------------------------------------------------------------------


def _header(document: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, Any]:
    """key, name, template and cancel_on, each checked (a bad one is an error and left empty)."""
    key = document.get("key")
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        errors["key"] = ["Lowercase letters, digits, `_` and `-`, at most 64, starting with a letter or digit."]
    name = document.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        errors["name"] = ["Text, at most 200 characters."]
        name = ""
    template = document.get("template")
    if template is None:
        template = ""
    elif not isinstance(template, str) or len(template) > 100:
        errors["template"] = ["A template key."]
        template = ""
    return {"key": str(key), "name": name, "template": template, "cancel_on": _cancel_on(document, errors)}


def _cancel_on(document: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, str] | None:
    value = document.get("cancel_on")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(value.get(field), str) and value[field] for field in ("event_type", "key")
    ):
        errors["cancel_on"] = ['{"event_type": "order.paid", "key": "order_id"}: both non-empty text.']
        return None
    return {"event_type": value["event_type"][:200], "key": value["key"][:200]}


def _step_list(raw: Any, errors: dict[str, list[str]]) -> list[Any] | None:
    if not isinstance(raw, list) or not raw:
        errors["steps"] = ["A non-empty list of steps."]
        return None
    if len(raw) > MAX_STEPS:
        errors["steps"] = [f"At most {MAX_STEPS} steps."]
        return None
    return raw


def _step_ids(raw: list[Any], errors: dict[str, list[str]], rules: dict[str, list[str]]) -> set[str]:
    """Every step is an object with a well-formed id and a known type, and no id is used twice; the ids."""
    ids: list[str] = []
    for index, step in enumerate(raw):
        where = f"steps[{index}]"
        if not isinstance(step, dict):
            errors[where] = ["An object with an `id` and a `type`."]
            continue
        step_id = step.get("id")
        if not isinstance(step_id, str) or not ID_RE.fullmatch(step_id):
            errors[f"{where}.id"] = ["Letters, digits, `_` and `-`, at most 64."]
        elif step_id in ids:
            rules[f"{where}.id"] = [f"The id {step_id!r} is used twice."]
        else:
            ids.append(step_id)
        if step.get("type") not in STEP_TYPES:
            errors[f"{where}.type"] = [f"One of {', '.join(STEP_TYPES)}."]
    return set(ids)


# --- Each step, by its type --------------------------------------------------------------------------


@dataclass
class _At:
    """Where a step is: its field prefix, what it starts from, its following step, the flow's ids, and
    where its errors go (`errors`: the shape, 400; `rules`: what the schema cannot express, 422)."""

    raw: list[dict[str, Any]]
    where: str
    base: dict[str, Any]
    next: str | None
    known: set[str]
    errors: dict[str, list[str]]
    rules: dict[str, list[str]]

    @classmethod
    def of(
        cls,
        raw: list[dict[str, Any]],
        index: int,
        known: set[str],
        errors: dict[str, list[str]],
        rules: dict[str, list[str]],
    ) -> _At:
        step, where = raw[index], f"steps[{index}]"
        following = raw[index + 1]["id"] if index + 1 < len(raw) else None
        at = cls(raw, where, {"id": step["id"], "type": step["type"], "index": index}, following, known, errors, rules)
        if "next" in step:
            at.next = _target(step["next"], f"{where}.next", at)
        return at

    def error(self, field: str, message: str) -> None:
        self.errors[f"{self.where}.{field}" if field else self.where] = [message]

    def rule(self, field: str, message: str) -> None:
        self.rules[f"{self.where}.{field}" if field else self.where] = [message]


def _parse_send(step: dict[str, Any], at: _At) -> list[dict[str, Any]]:
    return [
        {**at.base, "channels": _channels(step.get("channels"), f"{at.where}.channels", at.errors), "next": at.next}
    ]


def _parse_delay(step: dict[str, Any], at: _At) -> list[dict[str, Any]]:
    seconds = local = None
    if "duration" in step and (seconds := parse_duration(step["duration"])) is None:
        at.error("duration", 'A duration: seconds, or "30s", "10m", "2h", "1d" (at most 90 days).')
    if "until" in step and (local := parse_time_of_day(step["until"])) is None:
        at.error("until", 'A local time of day, "HH:MM".')
    if ("duration" in step) == ("until" in step):
        at.rule("", "A delay takes `duration` or `until`, one of them.")
        return []
    if "duration" in step:
        return [{**at.base, "duration": seconds, "next": at.next}]
    return [{**at.base, "until": local.isoformat("minutes") if local else None, "next": at.next}]


def _parse_digest(step: dict[str, Any], at: _At) -> list[dict[str, Any]]:
    minutes = step.get("window_minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= 7 * 24 * 60:
        at.error("window_minutes", "Whole minutes, 1 to 10080.")
    digest_key = step.get("key", step["id"])
    if not isinstance(digest_key, str) or not digest_key or len(digest_key) > 200:
        at.error("key", "A key (Jinja over the payload), at most 200 characters.")
    following_type = next((s.get("type") for s in at.raw if s.get("id") == at.next), None)
    if at.next is None or following_type not in ("send", "fallback"):
        at.rule("next", "A digest collects what the following step sends: it must be a send.")
    return [{**at.base, "window_minutes": minutes, "key": digest_key, "next": at.next}]


def _parse_branch(step: dict[str, Any], at: _At) -> list[dict[str, Any]]:
    condition = _condition(step.get("if"), f"{at.where}.if", at)
    # Absent or null: the following step.
    then = _target(step["then"], f"{at.where}.then", at) if step.get("then") is not None else at.next
    otherwise = _target(step["else"], f"{at.where}.else", at) if step.get("else") is not None else at.next
    wait = None
    if step.get("wait") is not None:
        wait = parse_duration(step["wait"])
        if wait is None:
            at.error("wait", 'A duration: seconds, or "30s", "10m", "2h", "1d".')
    return [{**at.base, "if": condition, "then": then, "else": otherwise, "wait": wait}]


def _parse_fallback(step: dict[str, Any], at: _At) -> list[dict[str, Any]]:
    channels = _channels(step.get("channels"), f"{at.where}.channels", at.errors)
    if channels and len(channels) < 2:
        at.error("channels", "A fallback names at least two channels, in order.")
    on = step.get("on", FAILED_STATES)
    on_states = [on] if isinstance(on, str) else on
    if not isinstance(on_states, list) or not on_states or any(s not in STATES for s in on_states):
        at.error("on", f"States from {', '.join(STATES)}.")
        on_states = FAILED_STATES
    wait = parse_duration(step.get("wait", DEFAULT_FALLBACK_WAIT))
    if wait is None:
        at.error("wait", 'A duration: seconds, or "30s", "10m", "2h", "1d".')
    return _expand_fallback(at.base, channels, on_states, wait, at.next)


def _parse_exit(step: dict[str, Any], at: _At) -> list[dict[str, Any]]:
    return [{**at.base, "next": None}]


_PARSERS = {
    "send": _parse_send,
    "delay": _parse_delay,
    "digest": _parse_digest,
    "branch": _parse_branch,
    "fallback": _parse_fallback,
    "exit": _parse_exit,
}


def _expand_fallback(
    base: dict[str, Any], channels: list[str], on: list[str], wait: int | None, nxt: str | None
) -> list[dict[str, Any]]:
    """`a, b, c`: send a; branch (wait) a failed? -> send b : next; branch b failed? -> send c : next; send c."""
    out: list[dict[str, Any]] = []
    step_id = base["id"]
    for position, channel in enumerate(channels):
        send_id = step_id if position == 0 else f"{step_id}.{channel}"
        last = position == len(channels) - 1
        check_id = f"{step_id}.{channel}-failed"
        out.append({**base, "id": send_id, "type": "send", "channels": [channel], "next": nxt if last else check_id})
        if not last:
            out.append(
                {
                    **base,
                    "id": check_id,
                    "type": "branch",
                    "if": {"channel": channel, "state": list(on)},
                    "wait": wait,
                    "then": f"{step_id}.{channels[position + 1]}",
                    "else": nxt,
                    "fallback": True,
                }
            )
    return out


def _edges(step: dict[str, Any]) -> list[str]:
    if step["type"] == "branch":
        return [t for t in (step["then"], step["else"]) if t]
    return [step["next"]] if step.get("next") else []


def _check_graph(steps: list[dict[str, Any]], errors: dict[str, list[str]]) -> None:
    """Refuses loops, unreachable steps, a channel sent by two steps and a condition on a channel
    no step sends; field errors name the step."""
    where = {s["id"]: f"steps[{s['index']}]" for s in steps}
    reached = _check_loops(steps, where, errors)
    _check_reachable(steps, reached, where, errors)
    sent = _check_channels_once(steps, where, errors)
    _check_conditions(steps, sent, where, errors)


def _check_loops(steps: list[dict[str, Any]], where: dict[str, str], errors: dict[str, list[str]]) -> set[str]:
    """A depth-first walk from the first step that meets a step on its own path; the steps reached."""
    by_id = {s["id"]: s for s in steps}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(step_id: str, path: list[str]) -> None:
        state[step_id] = 1
        for target in _edges(by_id[step_id]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target] if target in path else [step_id, target]
                errors.setdefault(f"{where[step_id]}.next", []).append(
                    f"This makes a loop: {' -> '.join(cycle)}. A flow runs forward only."
                )
            elif target not in state:
                walk(target, [*path, target])
        state[step_id] = 2

    first = steps[0]["id"]
    walk(first, [first])
    return set(state)


def _check_reachable(
    steps: list[dict[str, Any]], reached: set[str], where: dict[str, str], errors: dict[str, list[str]]
) -> None:
    for step in steps:
        if step["id"] not in reached:
            errors.setdefault(where[step["id"]], []).append(
                f"The step {step['id']!r} is unreachable: no step leads to it."
            )


def _check_channels_once(
    steps: list[dict[str, Any]], where: dict[str, str], errors: dict[str, list[str]]
) -> dict[str, str]:
    """Each channel is sent by one step; {channel: the step that sends it}."""
    sent: dict[str, str] = {}
    for step in steps:
        if step["type"] != "send":
            continue
        for channel in step["channels"]:
            if channel in sent:
                errors.setdefault(f"{where[step['id']]}.channels", []).append(
                    f"{channel!r} is already sent by step {sent[channel]!r}: a notification delivers each "
                    "channel once per recipient. Use another notification for a second message on it."
                )
            else:
                sent[channel] = step["id"]
    return sent


def _check_conditions(
    steps: list[dict[str, Any]], sent: dict[str, str], where: dict[str, str], errors: dict[str, list[str]]
) -> None:
    for step in steps:
        condition = step.get("if") if step["type"] == "branch" else None
        if condition and "channel" in condition and condition["channel"] not in sent:
            errors.setdefault(f"{where[step['id']]}.if.channel", []).append(
                f"No step sends {condition['channel']!r}: the condition could never be about a delivery."
            )


def step_map(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in steps}


def delay_of(step: dict[str, Any]) -> timedelta | None:
    return timedelta(seconds=step["duration"]) if step.get("duration") else None
