"""Field validators shared by the services, the API serializers and the admin forms.

Each returns the normalized value or raises `django.core.exceptions.ValidationError`, so the
same rule gives the same message wherever a value enters.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Mapping
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator

from apps.core.net import UnresolvableHost, UnsafeUrl, resolve_public_address
from apps.notifications.rendering import LOCALE_PATTERN

EXTERNAL_ID_PATTERN = re.compile(r"^[^/\s?#]{1,255}$")
# A digest rule's limits (services/digest.py checks them; the API schema states them).
MAX_RULE_WINDOW_MINUTES = 7 * 24 * 60
MAX_KEY_LENGTH = 200
_email = EmailValidator(message="Enter a valid email address.")
_url = URLValidator(schemes=["http", "https"], message="Enter an http(s) URL.")


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_external_id(value: Any) -> str:
    if not isinstance(value, str) or not EXTERNAL_ID_PATTERN.match(value):
        raise ValidationError("1-255 characters, without spaces, '/', '?' or '#'.", code="invalid_external_id")
    return value


def validate_phone(value: Any) -> str:
    """An E.164 number (`+14155550100`); spaces and dashes are tolerated and removed."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not value.strip().startswith("+"):
        raise ValidationError("Use E.164 format with the country code, e.g. +14155550100.", code="invalid_phone")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(f"Not a phone number: {exc}.", code="invalid_phone") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValidationError("Not a valid phone number for its country code.", code="invalid_phone")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def validate_timezone(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or value not in _zones():
        raise ValidationError("Use an IANA time zone name, e.g. Europe/Paris.", code="invalid_timezone")
    return value


def validate_locale(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not LOCALE_PATTERN.match(value):
        raise ValidationError("Use a BCP 47 locale, e.g. fr or fr-CA.", code="invalid_locale")
    return value.replace("_", "-")


def validate_email(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 254:  # 254: the column (and RFC 5321's path limit)
        raise ValidationError("Enter a valid email address.", code="invalid_email")
    _email(value)
    return value


def validate_url(value: Any) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ValidationError("Enter an http(s) URL.", code="invalid_url")
    _url(value)
    return value


def refuse_internal_url(value: str) -> str:
    """Refuses a URL Signalbox will post to whose host is internal (the egress guard,
    apps/core/net.py), as the send would. A name that does not resolve now passes: the guard
    checks it again at every send."""
    try:
        resolve_public_address(value)
    except UnsafeUrl as exc:
        raise ValidationError(exc.message, code=exc.code) from exc
    except UnresolvableHost:
        pass
    return value


def validate_outbound_url(value: Any) -> str:
    """An http(s) URL Signalbox will post to (a recipient's webhook URL): not an internal one."""
    value = validate_url(value)
    return refuse_internal_url(value) if value else value


def refuse_internal_chat_hook(value: str) -> str:
    """A chat address that is a URL is an incoming webhook, posted to as it is: not an internal one."""
    return refuse_internal_url(value) if value.startswith(("https://", "http://")) else value


def validate_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("Must be a JSON object.", code="invalid_object")
    return dict(value)


def messages(exc: ValidationError) -> list[str]:
    return [str(m) for m in exc.messages]
