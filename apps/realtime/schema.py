"""The JSON Schema of every live stream message (`schema.json`, next to this file), served by the API
at `GET /api/v1/realtime/schema/` and by the realtime process at the same path, and used by the tests
to validate every message they receive."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("schema.json")
PATH = "api/v1/realtime/schema/"


@functools.cache
def message_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


@functools.cache
def message_schema_bytes() -> bytes:
    return SCHEMA_FILE.read_bytes()
