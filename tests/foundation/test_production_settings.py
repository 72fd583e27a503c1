"""With DEBUG off, the process refuses committed secrets and development conveniences, naming the setting.

Each case starts a real process (`django.setup()` in a subprocess, as gunicorn, the workers and
beat do) from a clean environment, so nothing of the test run's own environment leaks in.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from project.production import DEV_WEBHOOK_SIGNING_SECRET, OVERRIDE
from sandbox import config as sandbox
from sandbox.keys import event_webhook_public_key

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": "a-production-grade-secret-" + "k" * 40,
    "ALLOWED_HOSTS": "signalbox.example.com",
    "DATABASE_URL": "postgres://signalbox:a-real-password@127.0.0.1:5432/signalbox",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "CACHE_URL": "redis://127.0.0.1:6379/1",
    "DEFAULT_FROM_EMAIL": "Signalbox <noreply@signalbox.example.com>",
}


def start(tmp_path: Path, **changes: str | None) -> subprocess.CompletedProcess[str]:
    """`django.setup()` in a fresh process with the production environment plus `changes` (None unsets)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "SIGNALBOX_DATA_DIR": str(tmp_path),
        **PRODUCTION,
    }
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "changes"),
    [
        ("SIGNALBOX_WEBHOOK_SIGNING_SECRET", {"SIGNALBOX_WEBHOOK_SIGNING_SECRET": DEV_WEBHOOK_SIGNING_SECRET}),
        ("SENDGRID_API_KEY", {"SENDGRID_API_KEY": sandbox.DEFAULT_SENDGRID_API_KEY}),
        (
            "TWILIO_AUTH_TOKEN",
            {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": sandbox.DEFAULT_TWILIO_AUTH_TOKEN},
        ),
        ("SLACK_BOT_TOKEN", {"SLACK_BOT_TOKEN": sandbox.DEFAULT_SLACK_BOT_TOKEN}),
        (
            "SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY",
            {"SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY": event_webhook_public_key(sandbox.DEFAULT_EVENT_KEY_SEED)},
        ),
        ("SIGNALBOX_SANDBOX_URL", {"SIGNALBOX_SANDBOX_URL": "http://sandbox:8025"}),
        ("SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE", {"SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE": "1"}),
        ("CELERY_BROKER_URL", {"CELERY_BROKER_URL": None}),
        ("CACHE_URL", {"CACHE_URL": None}),
        ("CACHE_URL", {"CACHE_URL": "locmemcache://"}),
        ("DATABASE_URL", {"DATABASE_URL": "postgres://signalbox:signalbox@127.0.0.1:5432/signalbox"}),
    ],
)
def test_production_refuses_each_insecure_setting_naming_it_and_the_override(tmp_path, setting, changes):
    refused = start(tmp_path, **changes)

    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr
    assert f"  - {setting} " in refused.stderr
    assert OVERRIDE in refused.stderr
    assert "started" not in refused.stdout


def test_only_insecure_production_settings_are_refused_and_the_override_lets_them_start(tmp_path):
    clean = start(tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert "started" in clean.stdout
    # `make run` (scripts/run.sh): DEBUG=1 and nothing else; the sandbox and the embedded Redis are the defaults.
    embedded = start(
        tmp_path,
        DEBUG="1",
        SECRET_KEY=None,
        ALLOWED_HOSTS=None,
        DATABASE_URL=None,
        CELERY_BROKER_URL=None,
        CACHE_URL=None,
        DEFAULT_FROM_EMAIL=None,
    )
    assert embedded.returncode == 0, embedded.stderr
    everything = {
        "SIGNALBOX_SANDBOX_URL": "http://sandbox:8025",
        "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE": "1",
        "CELERY_BROKER_URL": None,
        "CACHE_URL": None,
    }
    assert start(tmp_path, **everything).returncode != 0

    started = start(tmp_path, **everything, **{OVERRIDE: "1"})

    assert started.returncode == 0, started.stderr
    # The image build (Dockerfile: collectstatic with DEBUG=0, no broker, no cache) is such a run.
    build = _dockerfile_build_env()
    assert build[OVERRIDE] == "1"
    built = start(tmp_path, **{**dict.fromkeys(PRODUCTION), **build})
    assert built.returncode == 0, built.stderr
    # Never the development SECRET_KEY, whatever the override says.
    dev_key = start(
        tmp_path, SECRET_KEY="insecure-dev-key-only-for-the-embedded-default-do-not-deploy", **{OVERRIDE: "1"}
    )
    assert dev_key.returncode != 0 and "SECRET_KEY is the development key" in dev_key.stderr


def _dockerfile_build_env() -> dict[str, str]:
    """The `NAME=value` words of the Dockerfile's collectstatic RUN line."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if "collectstatic" in line]
    words = shlex.split(line.partition("RUN ")[2].partition(" python ")[0])
    return dict(word.split("=", 1) for word in words)


def _app_services(document: dict) -> dict[str, dict]:
    infrastructure = ("postgres", "pgbouncer", "redis", "sandbox")
    return {name: service for name, service in document["services"].items() if name not in infrastructure}


def test_compose_production_like_services_rely_on_no_committed_value():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    committed = {
        DEV_WEBHOOK_SIGNING_SECRET,
        sandbox.DEFAULT_SENDGRID_API_KEY,
        sandbox.DEFAULT_TWILIO_AUTH_TOKEN,
        sandbox.DEFAULT_SLACK_BOT_TOKEN,
    }
    for name, service in _app_services(compose).items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert env["DEBUG"] == "${DEBUG:-0}", name
        assert "SIGNALBOX_SANDBOX_URL" not in env and "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE" not in env, name
        assert env["CACHE_URL"].startswith("redis://") and env["CELERY_BROKER_URL"].startswith("redis://"), name
        assert ":signalbox@" not in env["DATABASE_URL"], name
        assert not committed & set(env.values()), name
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"

    # The development conveniences live in a file of their own, which says what it is.
    dev_text = (ROOT / "docker-compose.dev.yml").read_text()
    assert dev_text.startswith("# DEVELOPMENT ONLY")
    dev = yaml.safe_load(dev_text)
    assert set(_app_services(compose)) <= set(dev["services"])
    assert dev["services"]["web"]["environment"]["SIGNALBOX_SANDBOX_URL"] == "http://sandbox:8025"

    # Kubernetes, too: production values only; the shared cache is in the secret.
    config = yaml.safe_load((ROOT / "k8s" / "config.yaml").read_text())["data"]
    assert config["DEBUG"] == "0"
    assert not {"SIGNALBOX_SANDBOX_URL", "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE", OVERRIDE} & set(config)
    secret = yaml.safe_load((ROOT / "k8s" / "secret.example.yaml").read_text())["stringData"]
    assert secret["CACHE_URL"].startswith("redis://")


def test_the_settings_copies_of_the_sandbox_credentials_are_the_sandboxs_own():
    # project/ never imports the development sandbox, so it keeps copies; they must not drift.
    from project import sandbox_defaults

    assert sandbox_defaults.SENDGRID_API_KEY == sandbox.DEFAULT_SENDGRID_API_KEY
    assert sandbox_defaults.TWILIO_ACCOUNT_SID == sandbox.DEFAULT_TWILIO_ACCOUNT_SID
    assert sandbox_defaults.TWILIO_AUTH_TOKEN == sandbox.DEFAULT_TWILIO_AUTH_TOKEN
    assert sandbox_defaults.SLACK_BOT_TOKEN == sandbox.DEFAULT_SLACK_BOT_TOKEN
    assert (
        event_webhook_public_key(sandbox.DEFAULT_EVENT_KEY_SEED) == sandbox_defaults.SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY
    )
