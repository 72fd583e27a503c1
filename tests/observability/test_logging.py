"""Structured logs: one JSON object per line, the correlation context on every line, nothing secret."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from django.core.exceptions import ImproperlyConfigured

from apps.core import context
from apps.observability.redaction import redact, redact_text
from project.logging import logging_config

ROOT = Path(__file__).resolve().parents[2]

EMAIL = "jane.doe+orders@example.com"
PHONE = "+14155550123"
API_KEY = "sbx_AbCd1234.s3cretS3cretS3cretS3cretS3cretS3"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.payload.signature"
PASSWORD = "correct-horse-battery-staple"
SECRETS = [EMAIL, PHONE, "s3cretS3cret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "eyJhbGciOiJIUzI1NiJ9", PASSWORD]


def test_a_log_line_is_one_json_object_with_level_logger_time_and_context(capture_logs):
    log = capture_logs("json")
    with context.bound(request_id="req-1", tenant="t-1", notification_id="n-1", delivery_id="d-1"):
        structlog.get_logger("signalbox.test").info("delivery claimed", attempt=2)

    (line,) = log.events("delivery claimed")
    assert line["level"] == "info"
    assert line["logger"] == "signalbox.test"
    assert line["timestamp"].endswith("Z")
    assert line["attempt"] == 2
    assert {k: line[k] for k in ("request_id", "tenant", "notification_id", "delivery_id")} == {
        "request_id": "req-1",
        "tenant": "t-1",
        "notification_id": "n-1",
        "delivery_id": "d-1",
    }


def test_stdlib_and_library_logs_get_the_same_shape_and_context(capture_logs):
    log = capture_logs("json")
    with context.bound(request_id="req-2"):
        logging.getLogger("django.request").warning("Not Found: %s", "/nowhere", extra={"status_code": 404})

    (line,) = log.events("Not Found: /nowhere")
    assert line["level"] == "warning"
    assert line["logger"] == "django.request"
    assert line["request_id"] == "req-2"
    assert line["status_code"] == 404


def test_context_keys_given_on_the_call_win_and_nothing_leaks_after_the_block(capture_logs):
    log = capture_logs("json")
    with context.bound(request_id="outer"):
        structlog.get_logger("t").info("inside", request_id="explicit")
    structlog.get_logger("t").info("outside")

    assert log.events("inside")[0]["request_id"] == "explicit"
    assert "request_id" not in log.events("outside")[0]


def test_each_api_request_writes_one_access_line_with_its_request_id_and_tenant(api, tenant, capture_logs):
    log = capture_logs("json")
    response = api.get(f"/api/v1/audit/?actor={EMAIL}", HTTP_X_REQUEST_ID="req-access-1")
    assert response.status_code == 200

    (line,) = [line for line in log.events("request finished") if line.get("request_id") == "req-access-1"]
    assert line["method"] == "GET"
    assert line["path"] == "/api/v1/audit/"  # never the query string
    assert line["status"] == 200
    assert line["tenant"] == str(tenant.pk)
    assert line["duration_ms"] >= 0
    assert EMAIL not in log.text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_and_contact_details_never_reach_a_log_line(capture_logs, fmt):
    log = capture_logs(fmt)
    logger = structlog.get_logger("signalbox.test")
    with context.bound(request_id="req-secret"):
        logger.info(
            f"sending to {EMAIL} and {PHONE} with {API_KEY}",
            recipient={"email": EMAIL, "phones": [PHONE, "(415) 555-0199"]},
            headers={"Authorization": BEARER, "X-Api-Key": API_KEY},
            password=PASSWORD,
            config={"webhook": {"secret": WEBHOOK_SECRET, "url": f"https://user:{PASSWORD}@hooks.example.com/x"}},
            note=f"signed with {WEBHOOK_SECRET}; password={PASSWORD}",
        )
        logging.getLogger("celery.app.trace").info(
            "Task %s succeeded: %r", "signalbox.notifications.send", {"to": EMAIL, "api_key": API_KEY}
        )
        try:
            raise ValueError(f"provider refused {EMAIL}: token {BEARER}")
        except ValueError:
            logger.exception("send failed")

    assert "req-secret" in log.text  # the lines were written
    for secret in SECRETS:
        assert secret not in log.text, secret
    assert "[email]" in log.text and "[phone]" in log.text and "[redacted]" in log.text
    assert "sbx_AbCd1234" in log.text  # the key's public prefix stays: it says which key


def test_redaction_leaves_ordinary_values_alone():
    ordinary = {
        "delivery_id": "0190f5a2-7c1e-7d2a-9b1c-3e4f5a6b7c8d",
        "at": "2026-11-23T15:04:05.123456+00:00",
        "ip": "10.12.134.201",
        "duration_ms": 1234567.8,
        "count": 4155550123,
        "queue": "notifications.high",
        "version": "1.45.2",
        "path": "/api/v1/notifications/0190f5a2-7c1e-7d2a-9b1c-3e4f5a6b7c8d/",
    }
    assert redact(ordinary) == ordinary


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to +44 20 7946 0958 now", "to [phone] now"),
        ("call (415) 555-0123", "call [phone]"),
        ("call 415-555-0123.", "call [phone]."),
        ("key sbx_AbCd1234.secretpart here", "key sbx_AbCd1234.[redacted] here"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Authorization: Basic [redacted]"),
        ("redis://:hunter2@redis:6379/0", "redis://:[redacted]@redis:6379/0"),
        ("{'password': 'hunter2', 'user': 'bob'}", "{'password': '[redacted]', 'user': 'bob'}"),
        ("client_secret=abc123&x=1", "client_secret=[redacted]&x=1"),
    ],
)
def test_redact_text_masks_each_kind_of_secret(text, expected):
    assert redact_text(text) == expected


def test_secret_named_keys_are_masked_at_any_depth():
    redacted = redact({"a": [{"b": {"Password": "p", "auth_token": "t", "ok": "v"}}], "Cookie": "c"})
    assert redacted == {
        "a": [{"b": {"Password": "[redacted]", "auth_token": "[redacted]", "ok": "v"}}],
        "Cookie": "[redacted]",
    }


def test_a_bad_log_setting_is_refused_naming_the_setting():
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT"):
        logging_config(level="INFO", fmt="xml")
    with pytest.raises(ImproperlyConfigured, match="LOG_LEVEL"):
        logging_config(level="LOUD", fmt="json")

    env = {**os.environ, "LOG_FORMAT": "yaml", "DJANGO_SETTINGS_MODULE": "project.settings", "DEBUG": "1"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "LOG_FORMAT must be one of json, console" in result.stderr
