"""Typed settings (apps/core/conf.py and each app's conf.py): a bad value of each kind is refused at
start, by the `signalbox` system check, with the setting named; a good override is seen at once."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps.core.conf import core_settings
from apps.notifications import conf as notifications_conf
from apps.observability.checks import check_configuration_or_fail
from apps.providers.conf import providers_settings
from apps.tasks.conf import tasks_settings

BAD_VALUES: list[tuple[str, Any, str]] = [
    ("SIGNALBOX_RETENTION_DAYS", {"deliveries": -3}, "SIGNALBOX_RETENTION_DAYS['deliveries']"),
    ("SIGNALBOX_RETENTION_BATCH_SIZE", 10, "SIGNALBOX_RETENTION_BATCH_SIZE"),
    ("SIGNALBOX_RETENTION_MAX_SECONDS", 100_000, "SIGNALBOX_RETENTION_MAX_SECONDS"),
    ("SIGNALBOX_ENCRYPTION_KEY", "not-a-fernet-key", "SIGNALBOX_ENCRYPTION_KEY"),
    ("API_JSON_MAX_DEPTH", "deep", "API_JSON_MAX_DEPTH"),
    ("SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE", "yes", "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE"),
    ("SIGNALBOX_TRUSTED_PROXIES", ["10.0.0.0/33"], "SIGNALBOX_TRUSTED_PROXIES"),
    ("SIGNALBOX_PROVIDER_CHAINS", {"email": "sendgrid"}, "SIGNALBOX_PROVIDER_CHAINS['email']"),
    ("SIGNALBOX_PROVIDER_TIMEOUT", 0, "SIGNALBOX_PROVIDER_TIMEOUT"),
    ("SIGNALBOX_CIRCUIT_BREAKER", {"FAILURE": 3}, "SIGNALBOX_CIRCUIT_BREAKER"),
    ("SIGNALBOX_TASKS", {"LEASE_SECONDS": 0}, "SIGNALBOX_TASKS['LEASE_SECONDS']"),
    ("SIGNALBOX_TASKS", {"COUNTDOWN_MAX_SECONDS": 7200}, "COUNTDOWN_MAX_SECONDS"),
    ("SIGNALBOX_NOTIFICATIONS", {"MAX_ATTEMPTS": -1}, "SIGNALBOX_NOTIFICATIONS['MAX_ATTEMPTS']"),
    ("SIGNALBOX_DIGESTS", {"WEEKLY_DAY": "someday"}, 'SIGNALBOX_DIGESTS["WEEKLY_DAY"]'),
    ("SIGNALBOX_DIGESTS", {"ITEM_LIMIT": 0}, 'SIGNALBOX_DIGESTS["ITEM_LIMIT"]'),
    ("SIGNALBOX_RATE_LIMITS", ["not", "a", "mapping"], "SIGNALBOX_RATE_LIMITS"),
    ("SIGNALBOX_CALLBACK_MAX_AGE_SECONDS", -5, "SIGNALBOX_CALLBACK_MAX_AGE_SECONDS"),
    ("SIGNALBOX_INBOX_DEMO_TENANT", None, "SIGNALBOX_INBOX_DEMO_TENANT"),
]


@pytest.mark.parametrize(("name", "value", "named"), BAD_VALUES, ids=[f"{n}={v!r}" for n, v, _ in BAD_VALUES])
def test_a_bad_value_stops_the_start_naming_the_setting(settings, name, value, named):
    setattr(settings, name, value)

    with pytest.raises(ImproperlyConfigured) as refused:
        check_configuration_or_fail()

    assert "signalbox.E011" in str(refused.value) and named in str(refused.value)


def test_the_test_configuration_is_accepted():
    check_configuration_or_fail()


def test_a_missing_setting_is_a_loud_error_not_a_second_default(settings):
    del settings.SIGNALBOX_PROVIDER_TIMEOUT

    with pytest.raises(ImproperlyConfigured, match="SIGNALBOX_PROVIDER_TIMEOUT is not set"):
        providers_settings()


def test_overrides_are_seen_at_once(settings):
    settings.SIGNALBOX_RETENTION_BATCH_SIZE = 500
    settings.SIGNALBOX_TASKS = {"LEASE_SECONDS": 8}
    settings.SIGNALBOX_NOTIFICATIONS = {"MAX_ATTEMPTS": 2}

    assert core_settings().retention_batch_size == 500
    assert tasks_settings().lease_seconds == 8 and tasks_settings().heartbeat_seconds == 2
    assert tasks_settings().result_ttl_days == 7  # the dataclass's default: the only one
    assert notifications_conf.get().MAX_ATTEMPTS == 2


def test_the_send_lease_follows_the_task_time_limit_unless_set(settings):
    settings.SIGNALBOX_NOTIFICATIONS = {}
    settings.CELERY_TASK_TIME_LIMIT = 500
    assert notifications_conf.get().SEND_LEASE_SECONDS == 560

    settings.SIGNALBOX_NOTIFICATIONS = {"SEND_LEASE_SECONDS": 900}
    assert notifications_conf.get().SEND_LEASE_SECONDS == 900
