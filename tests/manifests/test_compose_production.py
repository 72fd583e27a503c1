"""docker-compose.yml as production runs it: every secret from `make secrets`, the app through PgBouncer,
migrations straight to PostgreSQL, and healthchecks that pass with a real ALLOWED_HOSTS."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.manifests.conftest import ROOT, compose

HOST = "signalbox.example.com"


def healthcheck_code(service: str) -> str:
    test = compose()["services"][service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("service", ["web", "realtime"])
def test_the_http_healthchecks_pass_with_real_allowed_hosts(service, live_server, settings):
    settings.ALLOWED_HOSTS = [HOST]
    settings.DEBUG = False
    code = re.sub(r"http://127\.0\.0\.1:\d+", live_server.url, healthcheck_code(service))
    env = {"PATH": "/usr/bin:/bin", "ALLOWED_HOSTS": f"{HOST},api.example.com"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-1500:]
    # What they did before: no Host header, so 127.0.0.1:<port> -> 400 under a real ALLOWED_HOSTS.
    plain = f"import urllib.request; urllib.request.urlopen('{live_server.url}/readyz', timeout=3)"
    before = subprocess.run([sys.executable, "-c", plain], env=env, capture_output=True, text=True, check=False)
    assert before.returncode != 0 and "400" in before.stderr


def test_the_app_goes_through_pgbouncer_and_migrations_straight_to_postgres():
    services = compose()["services"]
    web = services["web"]["environment"]
    assert "@pgbouncer:5432/" in web["DATABASE_URL"] and web["DATABASE_POOLER"] == "pgbouncer"
    migrate = services["migrate"]
    assert (
        "@postgres:5432/" in migrate["environment"]["DATABASE_URL"] and migrate["environment"]["DATABASE_POOLER"] == ""
    )
    assert migrate["command"] == ["python", "manage.py", "migrate_and_schedule"]
    pgbouncer = services["pgbouncer"]["environment"]
    assert pgbouncer["POOL_MODE"] == "transaction"
    assert "sandbox" not in services  # the production image has no sandbox dependencies (docker-compose.dev.yml)


def test_make_secrets_generates_every_secret_that_production_requires(tmp_path: Path):
    env_file = tmp_path / ".env"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_secrets.py"), "--output", str(env_file)], check=True
    )
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line and line[0] != "#")
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "SIGNALBOX_ENCRYPTION_KEY", "FLOWER_BASIC_AUTH"):
        assert len(values[name]) >= 16, name
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    # Every ${NAME} that the compose file reads for a secret is in .env.example.
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "SIGNALBOX_ENCRYPTION_KEY", "FLOWER_BASIC_AUTH"):
        assert f"${{{name}:-}}" in text and name in values, name
    # Production settings accept them: no refusal, no committed value.
    environ = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "0",
        "SECRET_KEY": values["SECRET_KEY"],
        "SIGNALBOX_ENCRYPTION_KEY": values["SIGNALBOX_ENCRYPTION_KEY"],
        "SIGNALBOX_WEBHOOK_SIGNING_SECRET": values["SIGNALBOX_WEBHOOK_SIGNING_SECRET"],
        "ALLOWED_HOSTS": HOST,
        "SIGNALBOX_PUBLIC_URL": f"https://{HOST}",
        "DATABASE_URL": f"postgres://signalbox:{values['POSTGRES_PASSWORD']}@pgbouncer:5432/signalbox",
        "DATABASE_POOLER": "pgbouncer",
        "CELERY_BROKER_URL": "redis://redis:6379/0",
        "CACHE_URL": "redis://redis:6379/1",
    }
    code = "import django; django.setup(); print('ok')"
    result = subprocess.run([sys.executable, "-c", code], env=environ, cwd=ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
    # and it refuses to overwrite secrets in use
    again = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_secrets.py"), "--output", str(env_file)],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1


def test_the_dev_override_keeps_the_sandbox_on_its_own_development_image():
    dev = yaml.safe_load((ROOT / "docker-compose.dev.yml").read_text())
    sandbox = dev["services"]["sandbox"]
    assert sandbox["build"]["args"] == {"REQUIREMENTS": "dev"} and sandbox["image"] != "signalbox:latest"
