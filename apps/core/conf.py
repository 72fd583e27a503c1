"""Typed settings: core's own, and the small readers every app's `conf.py` builds its settings with.

Each Signalbox setting has one default. Environment variables are parsed, and defaults given, in
project/settings.py, which sets every Signalbox setting; apps read them here without a fallback
(`settings.X`, never `getattr(settings, "X", default)`), so a second default cannot creep in. Where a
setting is a dict of knobs (`SIGNALBOX_TASKS`, `SIGNALBOX_NOTIFICATIONS`, …) the app's dataclass field
defaults are the single source and settings.py passes only what the environment overrides
(docs/operations.md, "Settings", lists every setting, its variable, its default and its reader).

Values are read and checked on each call, so test overrides (pytest-django's `settings`,
`override_settings`) are seen at once; a bad value raises `ImproperlyConfigured` naming the setting.
Each app registers its readers here in `AppConfig.ready()` (`register_settings`), and the start-up
check (apps/observability/checks.py, run by gunicorn, the workers, beat and `manage.py check`) calls
them all once, so a bad value stops the process at start instead of at first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# --- Readers: one setting (or one key of a dict setting), its type and range, or ImproperlyConfigured --


def setting(name: str) -> Any:
    """`settings.<name>`; project/settings.py sets every Signalbox setting, so a missing one is a bug."""
    try:
        return getattr(settings, name)
    except AttributeError:
        raise ImproperlyConfigured(f"{name} is not set (project/settings.py sets every Signalbox setting).") from None


def as_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number (an integral float such as 60.0 counts), within [minimum, maximum]."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.")
    _in_range(value, name, minimum, maximum)
    return value


def as_float(
    value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None, positive: bool = False
) -> float:
    """A number within [minimum, maximum]; `positive` also refuses 0."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.")
    if positive and value <= 0:
        raise ImproperlyConfigured(f"{name} must be positive, not {value!r}.")
    _in_range(value, name, minimum, maximum)
    return float(value)


def _in_range(value: float, name: str, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value!r}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value!r}.")


def as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"{name} must be True or False, not {value!r}.")
    return value


def as_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ImproperlyConfigured(f"{name} must be a string, not {value!r}.")
    return value


def as_str_list(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ImproperlyConfigured(f"{name} must be a list of strings, not {value!r}.")
    return tuple(value)


def as_mapping(value: Any, name: str, *, known: Sequence[str] | None = None) -> Mapping[str, Any]:
    """A dict (read-only copy); with `known`, a key outside it is refused (a typo would be ignored)."""
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(f"{name} must be a mapping, not {type(value).__name__}.")
    if known is not None:
        unknown = sorted(str(key) for key in set(value) - set(known))
        if unknown:
            raise ImproperlyConfigured(f"{name} has unknown keys: {', '.join(unknown)}.")
    return MappingProxyType(dict(value))


# --- The start-up check's list: every app's readers --------------------------------------------------

_READERS: dict[str, Callable[[], object]] = {}


def register_settings(*readers: Callable[[], object]) -> None:
    """Called from `AppConfig.ready()`: the start-up check calls each reader once."""
    for reader in readers:
        _READERS[f"{reader.__module__}.{reader.__qualname__}"] = reader


def settings_problems() -> list[str]:
    """Each registered reader's complaint about the current settings (empty: all good)."""
    problems: list[str] = []
    for reader in _READERS.values():
        try:
            reader()
        except ImproperlyConfigured as exc:
            problems.append(str(exc))
    return problems


# --- Core's own settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreSettings:
    json_max_depth: int  # API_JSON_MAX_DEPTH: deeper request bodies answer 400
    idempotency_ttl_hours: float  # IDEMPOTENCY_TTL_HOURS: how long an Idempotency-Key answers
    encryption_key: str  # SIGNALBOX_ENCRYPTION_KEY: Fernet keys, comma-separated; empty: derived from SECRET_KEY
    webhooks_allow_private: bool  # SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE
    redis_url: str  # SIGNALBOX_REDIS_URL; empty: the broker's when it is Redis
    retention_days: Mapping[str, int]  # SIGNALBOX_RETENTION_DAYS: overrides of the policies' own defaults
    retention_max_seconds: int  # SIGNALBOX_RETENTION_MAX_SECONDS: one purge run's budget
    retention_batch_size: int  # SIGNALBOX_RETENTION_BATCH_SIZE: rows per purge batch
    partitions_ahead: int  # SIGNALBOX_PARTITIONS_AHEAD: months of partitions created ahead
    partition_lock_timeout_ms: int  # SIGNALBOX_PARTITION_LOCK_TIMEOUT_MS: a partition drop's lock wait


def core_settings() -> CoreSettings:
    return CoreSettings(
        json_max_depth=as_int(setting("API_JSON_MAX_DEPTH"), "API_JSON_MAX_DEPTH", minimum=1),
        idempotency_ttl_hours=as_float(setting("IDEMPOTENCY_TTL_HOURS"), "IDEMPOTENCY_TTL_HOURS", positive=True),
        encryption_key=_encryption_key(),
        webhooks_allow_private=as_bool(setting("SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE"), "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE"),
        redis_url=as_str(setting("SIGNALBOX_REDIS_URL"), "SIGNALBOX_REDIS_URL"),
        retention_days=_retention_days(),
        retention_max_seconds=as_int(
            setting("SIGNALBOX_RETENTION_MAX_SECONDS"),
            "SIGNALBOX_RETENTION_MAX_SECONDS",
            minimum=1,
            maximum=int(settings.CELERY_TASK_SOFT_TIME_LIMIT) - 1,  # the run must end before its task's limit
        ),
        retention_batch_size=as_int(
            setting("SIGNALBOX_RETENTION_BATCH_SIZE"), "SIGNALBOX_RETENTION_BATCH_SIZE", minimum=100, maximum=50000
        ),
        partitions_ahead=as_int(
            setting("SIGNALBOX_PARTITIONS_AHEAD"), "SIGNALBOX_PARTITIONS_AHEAD", minimum=1, maximum=24
        ),
        partition_lock_timeout_ms=as_int(
            setting("SIGNALBOX_PARTITION_LOCK_TIMEOUT_MS"), "SIGNALBOX_PARTITION_LOCK_TIMEOUT_MS", minimum=1
        ),
    )


def _encryption_key() -> str:
    name = "SIGNALBOX_ENCRYPTION_KEY"
    configured = as_str(setting(name), name)
    try:
        [Fernet(key.strip()) for key in configured.split(",") if key.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be Fernet keys (Fernet.generate_key()), comma-separated.") from exc
    return configured


def _retention_days() -> Mapping[str, int]:
    name = "SIGNALBOX_RETENTION_DAYS"
    raw = as_mapping(setting(name), name)
    return MappingProxyType({str(key): as_int(days, f"{name}[{key!r}]", minimum=1) for key, days in raw.items()})
