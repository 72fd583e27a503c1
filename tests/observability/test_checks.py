"""Configuration is validated at start, with an error that names the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured

from apps.notifications import channels
from apps.observability.checks import TAG, check_configuration_or_fail

ROOT = Path(__file__).resolve().parents[2]


def problems() -> dict[str, str]:
    return {str(message.id): message.msg for message in run_checks(tags=[TAG])}


@pytest.fixture(autouse=True)
def _fresh_provider_registry():
    yield
    channels.reset()


def test_the_test_configuration_passes(settings):
    settings.PUBLIC_URL = "https://signalbox.example.com"  # pytest-django runs with DEBUG off
    assert problems() == {}
    check_configuration_or_fail()


@pytest.mark.parametrize(
    ("url", "debug"),
    [("kafka://broker:9092", True), ("memory://", False), ("redis://", False), ("amqp:///", False)],
)
def test_a_bad_broker_url_is_refused(settings, url, debug):
    settings.DEBUG = debug
    settings.CELERY_BROKER_URL = url
    assert "CELERY_BROKER_URL" in problems()["signalbox.E001"]


def test_production_refuses_sqlite_and_a_non_url_public_address(settings, monkeypatch):
    settings.DEBUG = False
    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.sqlite3")
    settings.PUBLIC_URL = "signalbox.example.com"
    found = problems()
    assert "DATABASE_URL" in found["signalbox.E002"]
    assert "SIGNALBOX_PUBLIC_URL" in found["signalbox.E003"]


def test_production_refuses_placeholder_secrets(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = "change-me-" + "x" * 50
    settings.CELERY_BROKER_URL = "redis://:changeme@redis:6379/0"
    messages = [m.msg for m in run_checks(tags=[TAG]) if m.id == "signalbox.E009"]
    assert any("SECRET_KEY" in m for m in messages) and any("CELERY_BROKER_URL" in m for m in messages)
    assert not any("change-me" in m or "changeme" in m for m in messages)  # never echo the secret


def test_unknown_provider_names_are_refused_naming_the_setting(settings):
    settings.SIGNALBOX_PROVIDER_CHAINS = {**settings.SIGNALBOX_PROVIDER_CHAINS, "sms": ["twilio", "messagebird"]}
    assert "'messagebird'" in problems()["signalbox.E010"]

    settings.SIGNALBOX_PROVIDER_CHAINS = {}
    settings.SIGNALBOX_CHANNEL_PROVIDERS = {"email": ["apps.nowhere.Provider"]}
    assert "apps.nowhere.Provider" in problems()["signalbox.E010"]


def test_tracing_and_metrics_settings_are_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4318")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in problems()["signalbox.E004"]
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")

    # This process imported prometheus_client without the variable: setting it now is too late.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert "PROMETHEUS_MULTIPROC_DIR" in problems()["signalbox.E006"]

    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops")
    assert "FLOWER_BASIC_AUTH" in problems()["signalbox.E008"]


def test_the_fail_fast_entry_point_lists_every_error(settings):
    settings.CELERY_BROKER_URL = "kafka://x"
    settings.PUBLIC_URL = "nowhere"
    with pytest.raises(ImproperlyConfigured) as raised:
        check_configuration_or_fail()
    assert "signalbox.E001: CELERY_BROKER_URL" in str(raised.value)
    assert "signalbox.E003: SIGNALBOX_PUBLIC_URL" in str(raised.value)


def test_a_worker_with_a_placeholder_secret_refuses_to_start():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "0",
        "SECRET_KEY": "change-me-" + "x" * 50,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/signalbox",
        "CACHE_URL": "redis://127.0.0.1:6379/1",  # past project/production.py's guard, to the checks
        "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE": "0",
        "CELERY_BROKER_KEYPREFIX": "sbxtest:refused:",
    }
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-Q", "maintenance", "-c", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "SECRET_KEY holds a placeholder value in production" in result.stdout + result.stderr


def test_flower_refuses_to_start_unauthenticated_in_production():
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")},
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "0",
        "SECRET_KEY": "a-production-grade-secret-" + "y" * 40,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/signalbox",
        "CACHE_URL": "redis://127.0.0.1:6379/1",
        "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE": "0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery", "flower", "--conf=workers/flowerconfig.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr
