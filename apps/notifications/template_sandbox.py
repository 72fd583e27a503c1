"""The Jinja environment templates run in: a sandbox that never evaluates an expression while a
template is compiled or validated, and that renders under budgets.

Tenants write templates, so a template is an untrusted program. Jinja alone would let one
`{{ 'x' * 10**9 }}` allocate a gigabyte — even while *validating* (the compiler folds constant
expressions: `optimized=False` only drops the optimizer pass, the code generator still calls
`as_const` on every output expression). Here:

- every binary and unary operator is *intercepted* (a sandbox then refuses to fold it) and every
  filter is a `pass_context` wrapper (Jinja never folds those), so compiling a template runs none
  of its expressions;
- while rendering, each operator, call, filter, loop iteration and output chunk goes through a
  `Budget` (a context variable set for each render): a cap on loop iterations, on the size of any
  string or sequence made (checked *before* making it where the size is known up front, such as
  `'x' * n`, `range(n)`, `center(n)`, `join`, `%`/`format` widths), on the characters produced in
  all, and a wall-clock deadline. Going over raises `BudgetExceeded`;
- `render_bounded` streams the output and stops as soon as the field's output limit is passed.

Rendering outside `render_bounded` is refused (fail closed), except `Template.render`, which opens
a default scope for callers that render a small template directly (the digest key).
"""

from __future__ import annotations

import contextvars
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter, safe_range
from markupsafe import Markup

# The filter every `{% for %}` iterable is wrapped in at compile time. Not a valid Jinja name, so
# a template cannot name it.
ITERATE_FILTER = "signalbox:iterate"
# Integers beyond this many bits cannot even be printed (Python refuses str() past 4,300 digits);
# refusing them early keeps `x * x` in a loop from growing without bound.
MAX_INT_BITS = 100_000
_SIZED = (str, bytes, bytearray, list, tuple, dict, set, frozenset)
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Limits:
    """One render's budgets (see `conf.NotificationSettings.TEMPLATE_*`)."""

    max_value_chars: int
    max_loop_iterations: int
    max_work_chars: int
    render_seconds: float


class RenderError(Exception):
    """Content could not be rendered for this data (a missing variable, a sandbox violation)."""


class TemplateBudgetExceeded(RenderError):
    """A render went over a budget: `field` is what was rendered (`channel.field`), `setting` the
    knob that sets the budget. A RenderError, so every caller's permanent-failure path applies."""

    def __init__(self, message: str, *, field: str = "", setting: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.setting = setting


class Budget:
    """What one field's render may still spend. Sticky: once over, every later check fails too."""

    def __init__(self, *, limits: Limits, label: str, deadline: float | None = None) -> None:
        self.limits = limits
        self.label = label
        self.deadline = deadline if deadline is not None else time.monotonic() + limits.render_seconds
        self.iterations_left = limits.max_loop_iterations
        self.work_left = limits.max_work_chars
        self.broken: TemplateBudgetExceeded | None = None

    def fail(self, what: str, setting: str) -> TemplateBudgetExceeded:
        self.broken = TemplateBudgetExceeded(
            f"Template budget exceeded: `{self.label}` {what} ({setting}).", field=self.label, setting=setting
        )
        return self.broken

    def tick(self) -> None:
        if self.broken is not None:
            raise self.broken
        if time.monotonic() > self.deadline:
            seconds = f"{self.limits.render_seconds:g}"
            raise self.fail(f"took more than {seconds} s to render", "TEMPLATE_RENDER_SECONDS")

    def iterate(self) -> None:
        self.iterations_left -= 1
        if self.iterations_left < 0:
            raise self.fail(
                f"ran more than {self.limits.max_loop_iterations} loop iterations", "TEMPLATE_MAX_LOOP_ITERATIONS"
            )
        self.tick()

    def allow(self, size: int) -> None:
        """Before making a value of `size` characters or items."""
        if size > self.limits.max_value_chars:
            raise self.fail(
                f"would make a value of {size} characters or items, over {self.limits.max_value_chars}",
                "TEMPLATE_MAX_VALUE_CHARS",
            )

    def allow_bits(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise self.fail(f"would make a number of about {bits} bits, over {MAX_INT_BITS}", "numbers' fixed size cap")

    def spend(self, size: int) -> None:
        self.work_left -= size
        if self.work_left < 0:
            raise self.fail(
                f"produced more than {self.limits.max_work_chars} characters or items in all",
                "TEMPLATE_MAX_WORK_CHARS",
            )
        self.tick()

    def made(self, value: Any) -> Any:
        """After a value was made: its size counts against both budgets."""
        if isinstance(value, _SIZED):
            self.allow(len(value))
            self.spend(len(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            self.allow_bits(value.bit_length())
            self.tick()
        else:
            self.tick()
        return value


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("signalbox_template_budget", default=None)


def _budget() -> Budget:
    budget = _current.get()
    if budget is None:  # only reachable by rendering around render_bounded: refuse rather than run unbounded
        raise jinja2.exceptions.SecurityError("Templates render only inside a budget.")
    return budget


def render_bounded(template: jinja2.Template, context: Mapping[str, Any], *, budget: Budget, limit: int) -> str:
    """Renders chunk by chunk and stops as soon as the output passes `limit` characters.

    A MemoryError (the budgets should make it unreachable) becomes TemplateBudgetExceeded: a
    template must never take its worker down."""
    try:
        return _render_bounded(template, context, budget=budget, limit=limit)
    except MemoryError:
        raise budget.fail("ran out of memory", "memory") from None


def _render_bounded(template: jinja2.Template, context: Mapping[str, Any], *, budget: Budget, limit: int) -> str:
    token = _current.set(budget)
    try:
        chunks: list[str] = []
        size = 0
        stream = template.generate(context)
        try:
            for chunk in stream:
                size += len(chunk)
                if size > limit:
                    setting = f"TEMPLATE_OUTPUT_LIMITS[{budget.label!r}]" if "." in budget.label else "output"
                    raise budget.fail(f"rendered more than {limit} characters", setting)
                chunks.append(chunk)
        finally:
            close = getattr(stream, "close", None)  # a generator: stop it where it is
            if close is not None:
                close()
        return "".join(chunks)
    finally:
        _current.reset(token)


# --- Pre-checks: the size of what an operation would make, known before making it ---------------------


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) else default


def _check_percent_format(budget: Budget, spec: Any) -> None:
    """`'%0999999999d' % 1` and the `format` filter: widths and precisions within the value budget."""
    if not isinstance(spec, (str, bytes)):
        return
    text = spec.decode("latin-1") if isinstance(spec, bytes) else spec
    for match in _PERCENT_SPEC.finditer(text):
        for number in match.groups():
            if number == "*":
                raise jinja2.exceptions.SecurityError("`*` widths are not allowed in templates.")
            if number:
                budget.allow(int(number))


def _check_binop(budget: Budget, operator: str, left: Any, right: Any) -> None:
    sequences = (str, bytes, list, tuple)
    if operator == "*":
        if isinstance(left, sequences) and isinstance(right, int):
            budget.allow(len(left) * max(right, 0))
        elif isinstance(right, sequences) and isinstance(left, int):
            budget.allow(len(right) * max(left, 0))
        elif isinstance(left, int) and isinstance(right, int):
            budget.allow_bits(left.bit_length() + right.bit_length())
    elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        budget.allow(len(left) + len(right))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        budget.allow_bits(left.bit_length() * right)
    elif operator == "%" and isinstance(left, (str, bytes)):
        _check_percent_format(budget, left)


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})


def _check_method(budget: Budget, obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Methods of strings and numbers whose result can be far larger than their inputs."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(owner, (str, bytes, bytearray)):
        if name in _WIDTH_METHODS:
            budget.allow(_int(args[0] if args else kwargs.get("width")))
        elif name == "expandtabs":
            budget.allow(len(owner) * max(_int(args[0] if args else kwargs.get("tabsize"), 8), 1))
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)):
            old, new = args[0], args[1]
            count = _int(args[2] if len(args) > 2 else kwargs.get("count"), -1)
            occurrences = owner.count(old) if old else len(owner) + 1
            if count >= 0:
                occurrences = min(occurrences, count)
            budget.allow(len(owner) + occurrences * max(len(new) - len(old), 0))
        elif name == "join" and args:
            items = _materialize(budget, args[0])
            budget.allow(sum(len(i) for i in items if isinstance(i, _SIZED)) + len(owner) * max(len(items) - 1, 0))
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
            budget.allow(len(owner) * max(longest, 1))
    elif isinstance(owner, int) and name == "to_bytes":
        budget.allow(_int(args[0] if args else kwargs.get("length"), 1))
    return args


def _materialize(budget: Budget, iterable: Any) -> list[Any]:
    """An iterable as a list, refused as soon as it holds more items than a value may."""
    if isinstance(iterable, _SIZED):
        budget.allow(len(iterable))
        return list(iterable)
    items: list[Any] = []
    for item in iterable:
        items.append(item)
        if len(items) % 1024 == 0:
            budget.allow(len(items))
            budget.tick()
    budget.allow(len(items))
    return items


def _text_length(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes)) else len(str(value))


# Per filter: (budget, value, args, kwargs) -> (value, args, kwargs), raising when over a budget.
Precheck = Callable[[Budget, Any, tuple[Any, ...], dict[str, Any]], tuple[Any, tuple[Any, ...], dict[str, Any]]]


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _pre_center(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    budget.allow(_int(_arg(args, kwargs, 0, "width", 80)))
    return value, args, kwargs


def _pre_indent(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    per_line = len(width) if isinstance(width, str) else _int(width)
    budget.allow(per_line)
    text = str(value)
    budget.allow(len(text) + (text.count("\n") + 1) * per_line)
    return value, args, kwargs


def _pre_format(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _check_percent_format(budget, value)
    return value, args, kwargs


def _pre_join(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    items = _materialize(budget, value)
    separator = _arg(args, kwargs, 0, "d", "")
    size = len(str(separator)) * max(len(items) - 1, 0)
    budget.allow(size)
    if _arg(args, kwargs, 1, "attribute", None) is None:
        for item in items:
            size += _text_length(item)
            budget.allow(size)
    return items, args, kwargs


def _pre_batch(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    budget.allow(_int(_arg(args, kwargs, 0, "linecount", 0)))
    return value, args, kwargs


def _pre_slice(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    budget.allow(_int(_arg(args, kwargs, 0, "slices", 0)))
    return value, args, kwargs


def _pre_sum(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    start = _arg(args, kwargs, 1, "start", 0)
    items = _materialize(budget, value)
    if isinstance(start, _SIZED):  # concatenating sequences: the result holds all of them
        budget.allow(len(start) + sum(len(i) for i in items if isinstance(i, _SIZED)))
    return items, args, kwargs


def _pre_replace(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    text = str(value)
    old, new = str(_arg(args, kwargs, 0, "old", "")), str(_arg(args, kwargs, 1, "new", ""))
    count = _arg(args, kwargs, 2, "count", None)
    occurrences = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    budget.allow(len(text) + occurrences * max(len(new) - len(old), 0))
    return value, args, kwargs


def _pre_wordwrap(budget: Budget, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    wrapstring = _arg(args, kwargs, 2, "wrapstring", None)
    budget.allow(len(str(value)) * (1 + len(str(wrapstring or "\n"))))
    return value, args, kwargs


FILTER_PRECHECKS: dict[str, Precheck] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "format": _pre_format,
    "join": _pre_join,
    "batch": _pre_batch,
    "slice": _pre_slice,
    "sum": _pre_sum,
    "replace": _pre_replace,
    "wordwrap": _pre_wordwrap,
}


def budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its budget before and after running; `pass_context`, so never folded."""
    takes = getattr(getattr(func, "jinja_pass_arg", None), "name", None)  # what Jinja passes first
    precheck = FILTER_PRECHECKS.get(name)

    @pass_context
    def run(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if precheck is not None:
            value, args, kwargs = precheck(budget, value, args, kwargs)
        if takes == "context":
            result = func(context, value, *args, **kwargs)
        elif takes == "eval_context":
            result = func(context.eval_ctx, value, *args, **kwargs)
        elif takes == "environment":
            result = func(context.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        return budget.made(result)

    run.__name__ = getattr(func, "__name__", name)
    return run


@pass_context
def _iterate(context: Context, iterable: Any) -> Iterator[Any]:
    """What every `{% for %}` iterates: each item costs one loop iteration."""
    budget = _budget()
    for item in iterable:
        budget.iterations_left -= 1
        if budget.iterations_left < 0 or budget.broken is not None or time.monotonic() > budget.deadline:
            budget.iterate()  # raises: inlined above, as loops are hot
        yield item


def budgeted_range(*args: int) -> range:
    result = safe_range(*args)
    _budget().allow(len(result))
    return result


# --- Formatting with `str.format`: widths and precisions within the value budget ------------------------


class _BudgetFormatterMixin(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = _budget()
        for number in _DIGITS.findall(format_spec):
            budget.allow(int(number))
        return budget.made(super().format_field(value, format_spec))


class _BudgetFormatter(_BudgetFormatterMixin, SandboxedFormatter):
    pass


class _BudgetEscapeFormatter(_BudgetFormatterMixin, SandboxedEscapeFormatter):
    pass


# --- Code generation: no folding, and hooks on loops, concatenation and output --------------------------


class BudgetedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        for loop in list(node.find_all(nodes.For)):
            loop.iter = nodes.Filter(loop.iter, ITERATE_FILTER, [], [], None, None, lineno=loop.iter.lineno)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.budget_made(")
        super().visit_Concat(node, frame)
        self.write(")")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.budget_emit({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.budget_emit(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")


class BudgetedTemplate(jinja2.Template):
    environment: BudgetedEnvironment

    def render(self, *args: Any, **kwargs: Any) -> str:
        """Direct renders (a digest key) get a budget of their own unless one is running."""
        if _current.get() is not None:
            return super().render(*args, **kwargs)
        limits = self.environment.limits()
        budget = Budget(limits=limits, label="template")
        return render_bounded(self, dict(*args, **kwargs), budget=budget, limit=limits.max_value_chars)


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment (no `list.append` to double a list in a loop) plus budgets."""

    code_generator_class = BudgetedCodeGenerator
    template_class = BudgetedTemplate
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    intercepted_unops = frozenset({"+", "-"})

    def __init__(self, *, limits: Callable[[], Limits], **kwargs: Any) -> None:
        super().__init__(optimized=False, **kwargs)
        self.limits = limits  # read at each direct render, so settings changes apply
        self.filters = {name: budgeted_filter(name, func) for name, func in self.filters.items()}
        self.filters[ITERATE_FILTER] = _iterate
        self.globals["range"] = budgeted_range
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs: nothing a notification needs

    def budget_emit(self, value: str) -> str:
        """Every piece of output (a string), at the top level or captured by `{% set %}`, a macro or
        a call. The hottest hook, so `Budget.spend` is inlined: it runs only to raise."""
        budget = _current.get()
        if budget is None:
            raise jinja2.exceptions.SecurityError("Templates render only inside a budget.")
        budget.work_left -= len(value)
        if budget.work_left < 0 or budget.broken is not None or time.monotonic() > budget.deadline:
            budget.spend(0)
        return value

    def budget_made(self, value: Any) -> Any:
        return _budget().made(value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.tick()
        _check_binop(budget, operator, left, right)
        return budget.made(super().call_binop(context, operator, left, right))

    def call_unop(self, context: Context, operator: str, arg: Any) -> Any:
        _budget().tick()
        return super().call_unop(context, operator, arg)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (_iterate(__context, args[0]), *args[1:])
        args = _check_method(budget, __obj, args, kwargs)
        return budget.made(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """As Jinja's, with a formatter that checks widths and precisions first."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        f_self: str = value.__self__
        formatter: SandboxedFormatter = (
            _BudgetEscapeFormatter(self, escape=f_self.escape) if isinstance(f_self, Markup) else _BudgetFormatter(self)
        )
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                return type(f_self)(formatter.vformat(f_self, (), args[0]))
            return type(f_self)(formatter.vformat(f_self, args, kwargs))

        return wrapper
