"""Template content: its shape per channel, validation, locale fallback and sandboxed rendering.

Content is `{locale: {channel: {field: source}}}` with a `default` locale. Sources are Jinja2,
rendered in a sandbox (`template_sandbox.BudgetedEnvironment`) with `StrictUndefined` (a missing
variable is an error, never an empty string). Only `html` fields are autoescaped: text, SMS and
push are plain text. Compiled templates are cached by source, so a fan-out of 100,000 compiles
each field once.

A field whose source is only text and `{{ recipient.… }}` / payload lookups renders (under the same
budgets) to a `RenderedText`: the text, plus the same text with a token where each recipient value
went (`skeleton`) and those values (`values`), so a provider that substitutes per recipient
(SendGrid's personalizations) can send one body to many recipients (apps/providers/email.py).

Validation parses and compiles but never evaluates an expression (the sandbox refuses constant
folding). Rendering runs under budgets (`conf.NotificationSettings.TEMPLATE_*`): a render over one
raises `TemplateBudgetExceeded`, a `RenderError`, so every caller's permanent-failure path applies.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta, nodes
from markupsafe import escape

from apps.notifications import conf
from apps.notifications.template_sandbox import (
    Budget,
    BudgetedEnvironment,
    Limits,
    RenderError,
    TemplateBudgetExceeded,
    render_bounded,
)
from apps.providers.base import Channel

DEFAULT_LOCALE = "default"
RECIPIENT_VARIABLE = "recipient"
LOCALE_PATTERN = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")
VARIABLE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ChannelSpec:
    fields: tuple[str, ...]
    # At least one of each group must be present.
    required: tuple[tuple[str, ...], ...]
    html_fields: tuple[str, ...] = ()
    # Fields holding JSON whose string leaves are templates (push data, webhook body).
    json_fields: tuple[str, ...] = ()


CHANNEL_SPECS: dict[str, ChannelSpec] = {
    Channel.EMAIL: ChannelSpec(("subject", "text", "html"), (("subject",), ("text", "html")), html_fields=("html",)),
    Channel.SMS: ChannelSpec(("text",), (("text",),)),
    Channel.PUSH: ChannelSpec(("title", "body", "data"), (("title", "body"),), json_fields=("data",)),
    Channel.IN_APP: ChannelSpec(("title", "body", "action_url", "data"), (("title", "body"),), json_fields=("data",)),
    Channel.CHAT: ChannelSpec(("text",), (("text",),)),
    Channel.WEBHOOK: ChannelSpec(("body",), (("body",),), json_fields=("body",)),
}
CHANNELS: tuple[str, ...] = tuple(c.value for c in Channel)


def limits(settings: conf.NotificationSettings | None = None) -> Limits:
    """The budgets of one render, from SIGNALBOX_NOTIFICATIONS (read on each call: tests and
    operators may change them)."""
    settings = settings or conf.get()
    return Limits(
        max_value_chars=settings.TEMPLATE_MAX_VALUE_CHARS,
        max_loop_iterations=settings.TEMPLATE_MAX_LOOP_ITERATIONS,
        max_work_chars=settings.TEMPLATE_MAX_WORK_CHARS,
        render_seconds=settings.TEMPLATE_RENDER_SECONDS,
    )


_last_limits: tuple[conf.NotificationSettings, Limits] | None = None


def _limits_of(settings: conf.NotificationSettings) -> Limits:
    """`limits(settings)`, made once per settings object (conf.get() returns the same one until
    the settings change)."""
    global _last_limits
    last = _last_limits
    if last is None or last[0] is not settings:
        last = _last_limits = (settings, limits(settings))
    return last[1]


_text_env = BudgetedEnvironment(limits=limits, undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_html_env = BudgetedEnvironment(limits=limits, undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


@functools.lru_cache(maxsize=4096)
def _compiled(source: str, html: bool) -> jinja2.Template:
    return (_html_env if html else _text_env).from_string(source)


@functools.lru_cache(maxsize=4096)
def _names_used(source: str) -> frozenset[str]:
    """Top-level variables a source reads (raises TemplateSyntaxError when it does not parse).

    `find_undeclared_variables` runs Jinja's code generator, which folds constant expressions;
    the budgeted sandbox makes every operator and filter unfoldable, so nothing is evaluated here.
    """
    return frozenset(meta.find_undeclared_variables(_text_env.parse(source)))


def normalize_locale(locale: str) -> str:
    return locale.strip().replace("_", "-").lower()


def locale_chain(locale: str) -> list[str]:
    """`fr-CA` -> `["fr-ca", "fr", "default"]`: the most specific first, then each parent, then default."""
    parts = normalize_locale(locale).split("-") if locale else []
    chain = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return [*chain, DEFAULT_LOCALE]


def channel_content(content: Mapping[str, Any], channel: str, locale: str) -> tuple[str, dict[str, Any]] | None:
    """The first locale in the fallback chain that has content for this channel, and that content."""
    by_locale = {normalize_locale(k): v for k, v in content.items()}
    for candidate in locale_chain(locale):
        fields = by_locale.get(candidate, {}).get(channel)
        if fields:
            return candidate, fields
    return None


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)


def field_sources(channel: str, fields: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    spec = CHANNEL_SPECS[channel]
    for name in spec.fields:
        if name in fields:
            for source in _leaves(fields[name]):
                yield name, source


def uses_recipient(channel: str, fields: Mapping[str, Any]) -> bool:
    """Whether rendering depends on the recipient (if not, one rendering serves everyone)."""
    return any(RECIPIENT_VARIABLE in _names_used(source) for _, source in field_sources(channel, fields))


@functools.lru_cache(maxsize=4096)
def _recipient_attributes(source: str) -> frozenset[str] | None:
    """The names a source reads as `recipient.name` or `recipient["name"]`; None when it uses
    `recipient` any other way (as a whole, by a computed key, through a filter)."""
    if RECIPIENT_VARIABLE not in source:
        return frozenset()
    try:
        tree = _text_env.parse(source)
    except jinja2.TemplateSyntaxError:
        return None
    names: set[str] = set()
    read: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == RECIPIENT_VARIABLE):
            continue
        if isinstance(node, nodes.Getattr):
            names.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            names.add(node.arg.value)
        else:
            return None
        read.add(id(target))
    if any(n.name == RECIPIENT_VARIABLE and id(n) not in read for n in tree.find_all(nodes.Name)):
        return None
    return frozenset(names)


def recipient_attributes_read(content: Any) -> frozenset[str] | None:
    """What the templates of `content` (every locale and channel) read of `recipient`, by name;
    None when one of them uses it some other way (then all of it may matter)."""
    names: set[str] = set()
    for source in _leaves(content):
        used = _recipient_attributes(source)
        if used is None:
            return None
        names |= used
    return frozenset(names)


# --- Validation --------------------------------------------------------------------------------


def _syntax_message(exc: jinja2.TemplateSyntaxError) -> str:
    return f"Line {exc.lineno}: {exc.message}"


def channel_fields_errors(channel: str, fields: Any, allowed: set[str] | None) -> dict[str, list[str]]:
    """Errors for one channel's fields; `allowed` None means any variable name is accepted."""
    if not isinstance(fields, Mapping):
        return {"non_field_errors": ["Must be an object of fields."]}
    spec = CHANNEL_SPECS[channel]
    errors: dict[str, list[str]] = {}
    for name in sorted(set(fields) - set(spec.fields)):
        errors[name] = [f"Unknown field for {channel}; expected one of: {', '.join(spec.fields)}."]
    for group in spec.required:
        if not any(fields.get(name) for name in group):
            key = group[0] if len(group) == 1 else "non_field_errors"
            errors.setdefault(key, []).append(f"Required: {' or '.join(group)}.")
    for name in spec.fields:
        if name not in fields:
            continue
        value = fields[name]
        if name in spec.json_fields:
            if not isinstance(value, Mapping):
                errors.setdefault(name, []).append("Must be an object.")
                continue
        elif not isinstance(value, str):
            errors.setdefault(name, []).append("Must be a string.")
            continue
        if channel == Channel.EMAIL and name == "subject" and ("\r" in value or "\n" in value):
            errors.setdefault(name, []).append("A subject is one line: no line breaks.")
        undeclared: set[str] = set()
        for source in _leaves(value):
            try:
                used = _names_used(source)
            except jinja2.TemplateSyntaxError as exc:
                errors.setdefault(name, []).append(_syntax_message(exc))
                continue
            if allowed is not None:
                undeclared |= used - allowed - {RECIPIENT_VARIABLE}
        if undeclared:
            errors.setdefault(name, []).append(
                f"Uses undeclared variable(s): {', '.join(sorted(undeclared))}. Declare them in `variables`."
            )
    return errors


def content_errors(content: Any, allowed: set[str] | None) -> dict[str, Any]:
    """Nested field errors for template content `{locale: {channel: {field: source}}}`."""
    if not isinstance(content, Mapping) or not content:
        return {"non_field_errors": ["Must be an object of locales, with at least a `default` locale."]}
    errors: dict[str, Any] = {}
    if DEFAULT_LOCALE not in content:
        errors["non_field_errors"] = ["A `default` locale is required (the last step of every fallback chain)."]
    seen: dict[str, str] = {}
    for locale, channels in content.items():
        if locale != DEFAULT_LOCALE and not LOCALE_PATTERN.match(str(locale)):
            errors[locale] = {"non_field_errors": ["Not a locale; use BCP 47 like `fr` or `fr-CA`."]}
            continue
        normalized = normalize_locale(locale)
        if normalized in seen:
            errors[locale] = {"non_field_errors": [f"Same locale as {seen[normalized]!r}."]}
            continue
        seen[normalized] = locale
        if not isinstance(channels, Mapping) or not channels:
            errors[locale] = {"non_field_errors": ["Must be an object of channels with content."]}
            continue
        locale_errors: dict[str, Any] = {}
        for channel, fields in channels.items():
            if channel not in CHANNEL_SPECS:
                locale_errors[channel] = {"non_field_errors": [f"Unknown channel; use one of {', '.join(CHANNELS)}."]}
                continue
            field_errors = channel_fields_errors(channel, fields, allowed)
            if field_errors:
                locale_errors[channel] = field_errors
        if locale_errors:
            errors[locale] = locale_errors
    return errors


def channels_with_default_content(content: Mapping[str, Any]) -> set[str]:
    return {channel for channel, fields in (content.get(DEFAULT_LOCALE) or {}).items() if fields}


def variable_errors(variables: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Normalizes `["a", {"name": "b", "required": false, "example": 1}]`; returns (variables, errors)."""
    if not isinstance(variables, list):
        return [], {"non_field_errors": ["Must be a list of names or {name, required, example} objects."]}
    normalized: list[dict[str, Any]] = []
    errors: dict[str, Any] = {}
    names: set[str] = set()
    for index, item in enumerate(variables):
        spec = {"name": item} if isinstance(item, str) else item
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            errors[str(index)] = ["Must be a name or an object with a `name`."]
            continue
        name = spec["name"]
        if not VARIABLE_PATTERN.match(name):
            errors[str(index)] = [f"{name!r} is not a valid variable name."]
        elif name == RECIPIENT_VARIABLE:
            errors[str(index)] = ["`recipient` is provided by Signalbox; do not declare it."]
        elif name in names:
            errors[str(index)] = [f"{name!r} is declared twice."]
        elif set(spec) - {"name", "required", "example", "description"}:
            errors[str(index)] = ["Only name, required, example and description are allowed."]
        else:
            names.add(name)
            normalized.append(
                {
                    "name": name,
                    "required": bool(spec.get("required", True)),
                    "example": spec.get("example"),
                    "description": str(spec.get("description", "")),
                }
            )
    return normalized, errors


def missing_variables(variables: list[dict[str, Any]], payload: Mapping[str, Any]) -> list[str]:
    return [v["name"] for v in variables if v["required"] and v["name"] not in payload]


# --- Rendering ---------------------------------------------------------------------------------

# Marks the tokens of a `RenderedText` skeleton; a literal or a value containing it has none.
SKELETON_MARK = "-sbx-"


class RenderedText(str):
    """A rendered field (it *is* the text) that also knows its `skeleton`: the text with a token
    (`-sbx-<field letter><n>-`) where each recipient value went, and `values`, token -> value as
    rendered (escaped in HTML). Any string operation on it gives a plain `str`."""

    skeleton: str
    values: dict[str, str]

    def __new__(cls, text: str, skeleton: str, values: dict[str, str]) -> RenderedText:
        rendered = super().__new__(cls, text)
        rendered.skeleton = skeleton
        rendered.values = values
        return rendered


_Part = str | tuple[str, ...]  # literal text, or a lookup path (`("recipient", "name")`, `("order",)`)


@functools.lru_cache(maxsize=4096)
def _flat_parts(source: str) -> tuple[_Part, ...] | None:
    """The source as literal text and plain lookups (`{{ recipient.name }}`, `{{ order }}`), or None
    when it has anything else (filters, tests, control flow, expressions), or no recipient lookup."""
    try:
        body = _text_env.parse(source).body
    except jinja2.TemplateSyntaxError:
        return None
    parts: list[_Part] = []
    for statement in body:
        if not isinstance(statement, nodes.Output):
            return None
        for node in statement.nodes:
            if isinstance(node, nodes.TemplateData):
                parts.append(node.data)
                continue
            path: list[str] = []
            while isinstance(node, nodes.Getattr):
                path.insert(0, node.attr)
                node = node.node
            if not isinstance(node, nodes.Name):
                return None
            parts.append((node.name, *path))
    if not any(isinstance(p, tuple) and p[0] == RECIPIENT_VARIABLE for p in parts):
        return None
    return tuple(parts)


def _decompose(text: str, source: str, context: Mapping[str, Any], html: bool, letter: str) -> str:
    """`text` (rendered from `source`) as a `RenderedText` when its recipient values can be told
    apart from the rest; else `text` as it is. The result is checked: the skeleton with its values
    put back is exactly `text`."""
    parts = _flat_parts(source)
    if parts is None:
        return text
    pieces: list[str] = []
    skeleton: list[str] = []
    values: dict[str, str] = {}
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
            skeleton.append(part)
            continue
        value: Any = context.get(part[0])
        try:
            for attr in part[1:]:
                value = _text_env.getattr(value, attr)
        except Exception:  # it rendered, so this cannot fail; if it does, no skeleton
            return text
        shown = str(escape(value)) if html else str(value)
        pieces.append(shown)
        if part[0] == RECIPIENT_VARIABLE:
            token = f"{SKELETON_MARK}{letter}{len(values)}-"
            values[token] = shown
            skeleton.append(token)
        else:
            skeleton.append(shown)
    joined = "".join(skeleton)
    if (
        "".join(pieces) != text
        or joined.count(SKELETON_MARK) != len(values)
        or any(SKELETON_MARK in v for v in values.values())
    ):
        return text
    return RenderedText(text, joined, values)


def _render_value(
    value: Any, context: Mapping[str, Any], html: bool, budget: Budget, room: list[int], letter: str = ""
) -> Any:
    """Renders a field (a source, or JSON whose string leaves are sources) into `room[0]` characters;
    with a `letter`, a string source may come back as a `RenderedText` (its tokens named by it)."""
    if isinstance(value, str):
        text = render_bounded(_compiled(value, html), context, budget=budget, limit=room[0])
        room[0] -= len(text)
        return _decompose(text, value, context, html, letter) if letter else text
    if isinstance(value, Mapping):
        return {k: _render_value(v, context, html, budget, room) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context, html, budget, room) for v in value]
    return value


def _render_field(
    channel: str,
    name: str,
    value: Any,
    context: Mapping[str, Any],
    *,
    settings: conf.NotificationSettings,
    deadline: float,
) -> Any:
    label = f"{channel}.{name}"
    budgets = _limits_of(settings)
    budget = Budget(limits=budgets, label=label, deadline=deadline)
    room = [settings.TEMPLATE_OUTPUT_LIMITS.get(label, budgets.max_value_chars)]
    # Email bodies carry their skeleton for SendGrid's substitutions (the subject goes per recipient).
    letter = name[0] if channel == Channel.EMAIL and name in ("text", "html") else ""
    return _render_value(value, context, name in CHANNEL_SPECS[channel].html_fields, budget, room, letter)


def render_fields(
    channel: str, fields: Mapping[str, Any], context: Mapping[str, Any], *, deadline: float | None = None
) -> dict[str, Any]:
    """Renders one channel's fields under the template budgets; raises RenderError with a readable
    reason (TemplateBudgetExceeded when over a budget). `deadline` (monotonic) defaults to
    TEMPLATE_RENDER_SECONDS from now."""
    spec = CHANNEL_SPECS[channel]
    settings = conf.get()
    if deadline is None:
        deadline = time.monotonic() + settings.TEMPLATE_RENDER_SECONDS
    try:
        return {
            name: _render_field(channel, name, fields[name], context, settings=settings, deadline=deadline)
            for name in spec.fields
            if name in fields
        }
    except jinja2.UndefinedError as exc:
        raise RenderError(f"Missing variable: {exc.message}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise RenderError(f"Refused by the template sandbox: {exc}") from exc
    except jinja2.TemplateError as exc:
        raise RenderError(str(exc)) from exc
    except RecursionError as exc:
        raise RenderError("Too deeply nested (a macro or loop that calls itself without end?).") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RuntimeError) as exc:
        raise RenderError(f"{type(exc).__name__}: {exc}") from exc


def sample_context(variables: list[dict[str, Any]], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Data for previews: each variable's example (or a placeholder), then the caller's values."""
    context: dict[str, Any] = {
        v["name"]: v["example"] if v.get("example") is not None else f"<{v['name']}>" for v in variables
    }
    context.update(overrides or {})
    context.setdefault(
        RECIPIENT_VARIABLE,
        {
            "external_id": "preview-recipient",
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "phone": "+14155550100",
            "locale": "",
            "timezone": "UTC",
            "data": {},
        },
    )
    return context


def preview(
    content: Mapping[str, Any], variables: list[dict[str, Any]], data: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Every locale and channel rendered with sample data; a failure shows as `{"error": ...}`."""
    return preview_with_budgets(content, variables, data)[0]


def preview_with_budgets(
    content: Mapping[str, Any], variables: list[dict[str, Any]], data: Mapping[str, Any] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(preview, budget errors as `{locale: {channel: {field: [message]}}}`).

    One TEMPLATE_RENDER_SECONDS deadline covers the whole preview, so many locales and channels
    cannot multiply it; once it has passed, the rest are not rendered.
    """
    context = sample_context(variables, data)
    deadline = time.monotonic() + limits().render_seconds
    result: dict[str, dict[str, Any]] = {}
    over: dict[str, Any] = {}
    for locale, channels in content.items():
        result[locale] = {}
        for channel, fields in channels.items():
            try:
                result[locale][channel] = render_fields(channel, fields, context, deadline=deadline)
            except TemplateBudgetExceeded as exc:
                name = exc.field.split(".", 1)[-1]
                over.setdefault(locale, {}).setdefault(channel, {})[name] = [str(exc)]
                result[locale][channel] = {"error": str(exc)}
            except RenderError as exc:
                result[locale][channel] = {"error": str(exc)}
    return result, over


def budget_errors(content: Mapping[str, Any], variables: list[dict[str, Any]]) -> dict[str, Any]:
    """Budget violations of valid content rendered with each variable's example (or a placeholder),
    as `{locale: {channel: {field: [message]}}}`: the check at save. Other render errors depend on
    the data a notification brings, so they are not the save's business."""
    return preview_with_budgets(content, variables)[1]
