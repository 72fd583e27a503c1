"""The release version. Its one source is pyproject.toml's `[project] version`: /healthz reports it, the
image carries it as a label (the Dockerfile checks they agree), and docs/release.md says how it changes."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _read_version() -> str:
    return str(tomllib.loads(PYPROJECT.read_text())["project"]["version"])


__version__ = _read_version()
