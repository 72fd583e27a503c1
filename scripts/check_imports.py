"""The layering rules, executable: the import-linter contracts, then no import hidden in a function.

An import inside a function body is how a cycle between modules hides: the code runs, the cycle stays.
So the project's own modules are imported at the top of a module, always, and a function-level import
is allowed only where it is the documented way (an `AppConfig.ready()`, which Django runs once the app
registry is ready) or for an optional or heavy third-party dependency named in `LAZY_ALLOWED` with the
reason. Run by `make lint` and `make test`; `python scripts/check_imports.py` on its own.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("apps", "workers", "project", "sandbox")
PROJECT_PACKAGES = {"apps", "workers", "project", "sandbox"}

# Third-party modules a function may import late, and why.
LAZY_ALLOWED: dict[str, str] = {
    "opentelemetry": "optional: tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set, and it is heavy",
    "prometheus_client": "its multiprocess mode reads PROMETHEUS_MULTIPROC_DIR at import: a worker sets it first",
    "redis": "redis-py imports OpenTelemetry at import when it is installed (heavy, and tracing stays off unless "
    "configured): only the code that talks to Redis loads it",
    "kombu.transport.redis": "it imports redis-py (see `redis`)",
}


def _function_imports(tree: ast.AST) -> Iterator[tuple[ast.stmt, str, str]]:
    """Yields (node, imported module, enclosing function name) for each import inside a function."""
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield node, alias.name, func.name
            elif isinstance(node, ast.ImportFrom):
                yield node, "." * node.level + (node.module or ""), func.name


def _in_ready(tree: ast.AST) -> set[int]:
    """Ids of import nodes inside an `AppConfig.ready()` (Django's place for start-up imports)."""
    inside: set[int] = set()
    for cls in ast.walk(tree):
        if isinstance(cls, ast.ClassDef) and any(
            isinstance(b, ast.Name | ast.Attribute) and ast.unparse(b).endswith("AppConfig") for b in cls.bases
        ):
            for item in cls.body:
                if isinstance(item, ast.FunctionDef) and item.name == "ready":
                    inside.update(id(n) for n in ast.walk(item) if isinstance(n, ast.Import | ast.ImportFrom))
    return inside


def hidden_imports(paths: list[Path]) -> list[str]:
    problems: list[str] = []
    seen: set[int] = set()
    for path in paths:
        if "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        ready = _in_ready(tree)
        for node, module, func in _function_imports(tree):
            if id(node) in seen or id(node) in ready:
                continue
            seen.add(id(node))
            top = module.lstrip(".").split(".")[0]
            if module.startswith(".") or top in PROJECT_PACKAGES:
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: `{module}` imported inside {func}()")
            elif not any(module == m or module.startswith(m + ".") for m in LAZY_ALLOWED):
                problems.append(
                    f"{path.relative_to(ROOT)}:{node.lineno}: `{module}` imported inside {func}() "
                    "(import it at the top, or add it to LAZY_ALLOWED with the reason)"
                )
    return problems


def main() -> int:
    contracts_broken = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    paths = sorted(p for package in CHECKED for p in (ROOT / package).rglob("*.py"))
    problems = hidden_imports(paths)
    for problem in problems:
        print(problem)
    if problems:
        print(f"\n{len(problems)} import(s) inside function bodies (scripts/check_imports.py says why not)")
    return 1 if problems or contracts_broken else 0


if __name__ == "__main__":
    sys.exit(main())
