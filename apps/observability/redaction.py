"""Keeping secrets and contact details out of log lines.

`redact(value)` walks strings, mappings and sequences and returns a copy in which:
- the values of keys that name a secret (password, token, secret, authorization, cookie, api key,
  credentials…) are replaced whole, whatever they hold;
- inside every string, email addresses, phone numbers, Signalbox API keys (`sbx_<prefix>.<secret>`:
  the public prefix stays, the secret goes), webhook signing secrets (`whsec_…`), bearer tokens,
  `password=…`-style pairs and the password of a URL (`scheme://user:pass@host`) are masked.

It is the last step before a log line is rendered (project/logging.py), so it covers the event,
every key bound to it, and exception text. Over-masking a harmless value is the accepted cost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MASK = "[redacted]"

# Key names whose values are secret whatever they look like. Matched against the normalised key
# (lower case, '-' -> '_') as a substring, so `X-Api-Key`, `client_secret` and `db_password` all count.
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
    "credential",
    "private_key",
    "signature",
)

_EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# E.164 (`+14155550123`, also with spaces, dots or dashes between groups) and the usual national
# formats with separators (`(415) 555-0123`, `415-555-0123`). Bare digit runs are left alone: they are
# far more often ids, counts and epoch times than phone numbers.
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?!\w)"
    r"|(?<![\w])\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}(?!\w)"
    r"|(?<![\w.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\w-]|\.\d)"
)
_SBX_KEY = re.compile(r"\b(sbx_[A-Za-z0-9]{8})\.[A-Za-z0-9]+")
_WHSEC = re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+")
_BEARER = re.compile(r"\b([Bb]earer)\s+[A-Za-z0-9._~+/=-]{8,}|\b(Basic)\s+[A-Za-z0-9+/]{8,}={0,2}")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)
_SECRET_PAIR = re.compile(
    r"\b([\w-]*(?:password|passwd|secret|token|api[_-]?key)[\w-]*)(['\"]?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&\"'}]+)",
    re.IGNORECASE,
)


def _mask_pair_value(match: re.Match[str]) -> str:
    value = match.group(3)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{match.group(2)}{quote}{MASK}{quote}"


def is_secret_key(key: object) -> bool:
    name = str(key).lower().replace("-", "_")
    return any(part in name for part in SECRET_KEY_PARTS)


def redact_text(text: str) -> str:
    if not text:
        return text
    text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
    text = _SBX_KEY.sub(rf"\1.{MASK}", text)
    text = _WHSEC.sub(f"whsec_{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1) or m.group(2)} {MASK}", text)
    text = _SECRET_PAIR.sub(_mask_pair_value, text)
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub("[phone]", text)


def redact(value: Any, *, _depth: int = 0) -> Any:
    """A redacted copy of `value` (strings, mappings, lists, tuples, sets; anything else by its str())."""
    if _depth > 20:
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {
            k: MASK if is_secret_key(k) and v not in (None, "") else redact(v, _depth=_depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v, _depth=_depth + 1) for v in value]
    # Objects are rendered by their str() anyway (JSON fallback, console repr): redact that text.
    return redact_text(str(value))
