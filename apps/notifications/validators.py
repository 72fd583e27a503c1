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

from apps.notifications.rendering import LOCALE_PATTERN

EXTERNAL_ID_PATTERN = re.compile(r"^[^/\s?#]{1,255}$")
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
    if not isinstance(value, str):
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


def validate_object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError("Must be a JSON object.", code="invalid_object")
    return dict(value)


def messages(exc: ValidationError) -> list[str]:
    return [str(m) for m in exc.messages]
