"""CEL (Common Expression Language) conditions: workflow guards, rule conditions, computed values.

Expressions come from tenants, so they are never Python: they are parsed and interpreted by
`cel-python` (`celpy`), which has no access to anything but the variables we pass in. A source
text is compiled once per process (`compiled`), checked when a definition or rule is saved
(`check`), and evaluated with plain JSON values (`evaluate`, `evaluate_condition`), whose
results come back as plain JSON values too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError

MAX_EXPRESSION_LENGTH = 2000
# Comprehension macros bind their first argument as a local variable (`items.all(i, i.qty > 0)`).
_MACROS = {"all", "exists", "exists_one", "map", "filter"}

_environment = celpy.Environment()


class CelError(Exception):
    """An expression that does not compile, or did not evaluate to what was needed."""

    def __init__(self, message: str, *, expression: str) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


@functools.lru_cache(maxsize=2048)
def _compile(source: str) -> tuple[celpy.Runner, frozenset[str]]:
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise CelError(f"The expression is longer than {MAX_EXPRESSION_LENGTH} characters.", expression=source)
    if not source.strip():
        raise CelError("The expression is empty.", expression=source)
    try:
        ast = _environment.compile(source)
    except CELParseError as exc:
        where = f" at line {exc.line}, column {exc.column}" if getattr(exc, "line", None) else ""
        raise CelError(f"Invalid CEL: syntax error{where}.", expression=source) from exc
    except Exception as exc:  # lark raises its own errors for some malformed input
        raise CelError(f"Invalid CEL: {exc}", expression=source) from exc
    return _environment.program(ast), frozenset(_free_identifiers(ast))


def _free_identifiers(ast: lark.Tree) -> set[str]:
    """Top-level names the expression reads (minus comprehension variables)."""
    names: set[str] = set()
    bound: set[str] = set()
    for node in ast.iter_subtrees():
        if node.data == "ident":
            names.add(str(node.children[0]))
        elif node.data == "member_dot_arg" and len(node.children) >= 3 and str(node.children[1]) in _MACROS:
            exprlist = node.children[2]
            if isinstance(exprlist, lark.Tree) and exprlist.children:
                first = exprlist.children[0]
                idents = [n for n in first.iter_subtrees() if n.data == "ident"] if isinstance(first, lark.Tree) else []
                if len(idents) == 1:
                    bound.add(str(idents[0].children[0]))
    return names - bound


def check(source: str, *, variables: Iterable[str]) -> None:
    """Raises `CelError` unless `source` compiles and reads only the given top-level variables."""
    _, names = _compile(source)
    unknown = sorted(names - set(variables) - {"null", "true", "false"})
    if unknown:
        raise CelError(
            f"Unknown variable(s) {', '.join(unknown)}; available: {', '.join(sorted(variables))}.",
            expression=source,
        )


def references(source: str, name: str) -> bool:
    """Whether the expression reads the top-level variable `name` (e.g. `payload`)."""
    return name in _compile(source)[1]


def to_json(value: Any) -> Any:
    """A CEL value as a plain JSON value (CEL's bool is an int subclass: it must not become 1)."""
    if value is None:
        return None
    if isinstance(value, (celtypes.BoolType, bool)):
        return bool(value)
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else str(value)
    return str(value)


def evaluate(source: str, variables: Mapping[str, Any]) -> Any:
    """Evaluates `source` with JSON `variables`; returns a JSON value. Raises `CelError`."""
    program, _ = _compile(source)
    activation = {name: celpy.json_to_cel(value) for name, value in variables.items()}
    try:
        result = program.evaluate(activation)
    except Exception as exc:  # CELEvalError, CELUnsupportedError, and type errors inside celpy
        raise CelError(f"Could not evaluate: {_short(exc)}", expression=source) from exc
    return to_json(result)


def evaluate_condition(source: str, variables: Mapping[str, Any]) -> bool:
    """Evaluates a condition that must give a boolean. Raises `CelError` otherwise."""
    result = evaluate(source, variables)
    if not isinstance(result, bool):
        raise CelError(f"The condition gave {type(result).__name__}, not a boolean.", expression=source)
    return result


_MISSING_FIELD = re.compile(r"no such member in mapping: \\*'([^'\\]+)")
_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")


def _short(exc: Exception) -> str:
    """celpy's messages embed whole activations; keep the part a tenant can act on."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if missing := _MISSING_FIELD.search(repr(exc.args)):
        return f"no field {missing.group(1)!r}"
    if undeclared := _UNDECLARED.search(text):
        return f"unknown variable {undeclared.group(1)!r}"
    return text if len(text) <= 200 else text[:197] + "..."
