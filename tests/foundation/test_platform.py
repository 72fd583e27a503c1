"""The platform around the API: probes, schema, request ids, deploy checks, management commands."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

ROOT = Path(__file__).resolve().parents[2]


def test_healthz_is_always_ok(client):
    assert client.get("/healthz").json()["status"] == "ok"  # and the version: tests/foundation/test_release.py


@pytest.mark.django_db
def test_readyz_checks_database_and_broker(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.django_db
def test_readyz_is_503_when_the_broker_is_unreachable(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")


def test_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    made = client.get("/healthz")["X-Request-ID"]
    assert len(made) == 32
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"] != "bad id with spaces"


@pytest.mark.django_db
def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    body = schema.json()
    assert "/api/v1/tenant/" in body["paths"]
    assert "Error" in body["components"]["schemas"]
    assert body["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert client.get("/api/docs/").status_code == 200


@pytest.mark.django_db
def test_unknown_api_version_is_a_clear_404(api):
    response = api.get("/api/v9/tenant/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_production_settings_pass_check_deploy():
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "x" * 20 + "-production-grade-secret-" + "y" * 30,
        "ALLOWED_HOSTS": "signalbox.example.com",
        "SIGNALBOX_PUBLIC_URL": "https://signalbox.example.com",
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "CACHE_URL": "redis://127.0.0.1:6379/1",
        "SIGNALBOX_WEBHOOKS_ALLOW_PRIVATE": "0",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    env = {**os.environ, "DEBUG": "0", "DJANGO_SETTINGS_MODULE": "project.settings"}
    env.pop("SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_createtenant_and_createapikey_commands():
    out = StringIO()
    call_command("createtenant", "initech", "--name", "Initech", stdout=out)
    key_out = StringIO()
    call_command("createapikey", "initech", "--scope", "read", stdout=key_out)
    clear = key_out.getvalue().strip()
    assert clear.startswith("sbx_")
    response = APIClient().get("/api/v1/tenant/", HTTP_AUTHORIZATION=f"Bearer {clear}")
    assert response.json()["slug"] == "initech"
    call_command("createtenant", "initech", "--if-missing", stdout=StringIO())


@pytest.mark.django_db
def test_make_run_demo_prints_a_key_and_a_curl_that_works(settings):
    settings.DEBUG = True  # as under `make run`; the command refuses to make a demo admin otherwise
    out = StringIO()
    call_command("bootstrap_demo", stdout=out)
    text = out.getvalue()
    key = next(line.split()[3] for line in text.splitlines() if "Demo API key" in line)
    body = text.split("-d '")[1].split("'")[0]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.post("/api/v1/notifications/", data=body, content_type="application/json")
    assert response.status_code == 202, response.json()
    # A second run revokes the first key and is otherwise idempotent.
    call_command("bootstrap_demo", stdout=StringIO())
    assert client.get("/api/v1/tenant/").status_code == 401
