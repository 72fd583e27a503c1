#!/usr/bin/env python3
"""`make secrets`: writes .env from .env.example with every secret generated (docs/operations.md,
"Running with docker compose"). Standard library only, so it runs before any virtualenv exists.

Refuses to overwrite an existing file (secrets already in use would be lost: a new POSTGRES_PASSWORD
no longer opens the existing database, a new SIGNALBOX_ENCRYPTION_KEY no longer reads stored secrets).
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GENERATORS: dict[str, Callable[[], str]] = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    # A Fernet key: 32 random bytes, urlsafe base64 (what Fernet.generate_key() returns).
    "SIGNALBOX_ENCRYPTION_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "FLOWER_BASIC_AUTH": lambda: f"ops:{secrets.token_urlsafe(18)}",
    "SIGNALBOX_WEBHOOK_SIGNING_SECRET": lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
}


def generate(template: str) -> str:
    """The template with every generated setting's empty value filled in."""
    lines = []
    for line in template.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and name in GENERATORS and not value.strip():
            line = f"{name}={GENERATORS[name]()}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=ROOT / ".env.example")
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f"{args.output} exists: not overwriting secrets that may be in use.", file=sys.stderr)
        return 1
    args.output.write_text(generate(args.template.read_text()))
    args.output.chmod(0o600)
    print(
        f"Wrote {args.output} with generated {', '.join(GENERATORS)}; now set ALLOWED_HOSTS and SIGNALBOX_PUBLIC_URL."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
