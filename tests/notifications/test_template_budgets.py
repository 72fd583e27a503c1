"""Templates are tenants' programs (docs/notifications.md, "Template budgets"): validating one never
evaluates it, and every render runs under budgets. Saves and previews go through the API; sends
through the real Celery worker, whose adapters record into SinkRecord.

Memory is read from /proc: writing "5" to clear_refs resets a process's peak RSS (VmHWM), so the
peak after a request is what that request (and nothing before it) needed. Each bomb here would
need a gigabyte or more without the budgets.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from apps.notifications import rendering
from apps.notifications.models import Delivery, DeliveryAttempt, SinkRecord
from tests.conftest import wait_for

URL = "/api/v1/templates/"
# A process may grow by this much while refusing a bomb (the bombs ask for 1 GB or more).
MAX_GROWTH_MB = 150


def _reset_peak(pid: int | str = "self") -> float:
    """Resets the peak RSS of a process; returns its RSS now, in MB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_mb(pid, "VmRSS")


def _status_mb(pid: int | str, key: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


def _template(key: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "variables": [{"name": "n", "example": 1}, {"name": "s", "example": "y"}],
        "default_channels": list(content),
        "content": {"default": content},
        **extra,
    }


BOMBS = {
    # over TEMPLATE_MAX_VALUE_CHARS: a value of n characters
    "sms": {"text": "{{ 'x' * n }}"},
    # over TEMPLATE_MAX_LOOP_ITERATIONS: len(s)² iterations that output nothing
    "in_app": {"title": "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}done", "body": "ok"},
    # over TEMPLATE_OUTPUT_LIMITS['email.subject'] (1,000): s three times
    "email": {"subject": "{{ s }}{{ s }}{{ s }}", "text": "ok"},
}
BOMB_DATA = {"n": 10**9, "s": "y" * 3000}


@pytest.mark.django_db
def test_saving_a_template_never_evaluates_it_and_refuses_one_over_a_budget(api):
    before = _reset_peak()

    # A constant bomb: Jinja would fold `'x' * 10**9` while compiling, i.e. while validating.
    refused = api.post(URL, _template("bomb", {"sms": {"text": "{{ 'x' * 10**9 }}"}}), format="json")

    assert refused.status_code == 400, refused.json()
    body = refused.json()
    assert body["code"] == "template_budget_exceeded"
    (message,) = body["fields"]["content"]["default"]["sms"]["text"]
    assert "`sms.text`" in message and "TEMPLATE_MAX_VALUE_CHARS" in message

    # With an undeclared variable too, validation answers first, without evaluating anything.
    invalid = api.post(URL, _template("bomb", {"sms": {"text": "{{ 'x' * 10**9 }}{{ nope }}"}}), format="json")

    assert invalid.status_code == 400
    assert invalid.json()["code"] == "validation_error"
    assert "nope" in invalid.json()["fields"]["content"]["default"]["sms"]["text"][0]
    assert api.get(f"{URL}bomb/").status_code == 404
    assert _status_mb("self", "VmHWM") - before < MAX_GROWTH_MB


@pytest.mark.django_db
def test_a_preview_over_its_budgets_is_refused_naming_each_field_and_budget(api):
    assert api.post(URL, _template("bombs", BOMBS), format="json").status_code == 201
    # With the examples, everything is within budget.
    fine = api.post(f"{URL}bombs/preview/", {}, format="json")
    assert fine.status_code == 200, fine.json()
    assert fine.json()["rendered"]["default"]["sms"] == {"text": "x"}
    before = _reset_peak()

    refused = api.post(f"{URL}bombs/preview/", {"data": BOMB_DATA}, format="json")

    assert refused.status_code == 400, refused.json()
    body = refused.json()
    assert body["code"] == "template_budget_exceeded"
    fields = body["fields"]["content"]["default"]
    assert set(fields) == {"sms", "in_app", "email"}
    assert "TEMPLATE_MAX_VALUE_CHARS" in fields["sms"]["text"][0]
    assert "TEMPLATE_MAX_LOOP_ITERATIONS" in fields["in_app"]["title"][0]
    assert "TEMPLATE_OUTPUT_LIMITS['email.subject']" in fields["email"]["subject"][0]
    assert _status_mb("self", "VmHWM") - before < MAX_GROWTH_MB


@pytest.mark.django_db
def test_output_limits_and_the_render_deadline_come_from_settings(api, settings):
    template = _template("loops", {"sms": {"text": "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}ok"}})
    assert api.post(URL, template, format="json").status_code == 201
    settings.SIGNALBOX_NOTIFICATIONS = {
        **settings.SIGNALBOX_NOTIFICATIONS,
        "TEMPLATE_MAX_LOOP_ITERATIONS": 10**9,
        "TEMPLATE_RENDER_SECONDS": 1e-6,
        "TEMPLATE_OUTPUT_LIMITS": {"sms.text": 1},
    }

    # Nine million iterations are allowed, but not the time they take.
    slow = api.post(f"{URL}loops/preview/", {"data": {"s": "y" * 3000}}, format="json")
    assert slow.status_code == 400
    assert "TEMPLATE_RENDER_SECONDS" in slow.json()["fields"]["content"]["default"]["sms"]["text"][0]

    settings.SIGNALBOX_NOTIFICATIONS = {**settings.SIGNALBOX_NOTIFICATIONS, "TEMPLATE_RENDER_SECONDS": 60}
    short = api.post(f"{URL}loops/preview/", {"data": {"s": "y"}}, format="json")
    assert short.status_code == 400
    assert "more than 1 characters" in short.json()["fields"]["content"]["default"]["sms"]["text"][0]


def test_a_memory_error_while_rendering_is_a_render_error():
    class Hog:
        def __str__(self) -> str:
            raise MemoryError

    with pytest.raises(rendering.TemplateBudgetExceeded, match="ran out of memory"):
        rendering.render_fields("sms", {"text": "{{ hog }}"}, {"hog": Hog()})


@pytest.mark.worker
def test_a_send_over_a_budget_fails_for_good_without_reaching_the_provider(
    worker, api, recording_tenant, make_recipients
):
    # Given a template whose SMS, in-app and email renders each go over a different budget
    content = {
        "sms": {"text": "{{ s }}{{ s }}"},  # 2,000 characters: over the SMS output limit (1,600)
        "in_app": {"title": "{{ 'x' * n }}", "body": "ok"},  # rendered at fan-out
        "email": {"subject": "Hi", "html": "{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}"},
    }
    assert api.post(URL, _template("bombs", content), format="json").status_code == 201
    make_recipients(1, phone="+14155550100")
    worker_pids = [worker.proc.pid, *worker.children()]
    before = {pid: _reset_peak(pid) for pid in worker_pids}

    # When a notification brings data that blows them
    response = api.post(
        "/api/v1/notifications/",
        {"template": "bombs", "payload": {"n": 10**9, "s": "y" * 1000}, "recipients": ["user-0"]},
        format="json",
    )
    assert response.status_code == 202, response.json()
    notification_id = response.json()["id"]
    deliveries = wait_for(
        lambda: (
            rows
            if len(rows := list(Delivery.objects.filter(notification_id=notification_id))) == 3
            and all(d.status == Delivery.Status.FAILED for d in rows)
            else None
        ),
        timeout=60,
        message="three failed deliveries",
    )

    # Then each delivery failed permanently, saying which budget, storing nothing rendered
    errors = {d.channel: d.last_error for d in deliveries}
    assert "TEMPLATE_OUTPUT_LIMITS['sms.text']" in errors["sms"]
    assert "`in_app.title`" in errors["in_app"] and "TEMPLATE_MAX_VALUE_CHARS" in errors["in_app"]
    assert "`email.html`" in errors["email"] and "TEMPLATE_MAX_LOOP_ITERATIONS" in errors["email"]
    for delivery in deliveries:
        assert delivery.error_code == "render_error"
        assert delivery.next_attempt_at is None
        assert delivery.rendered is None
        assert len(delivery.last_error) < 500
    # And no provider was called, and the worker stayed small
    assert not SinkRecord.objects.filter(delivery_id__in=[str(d.pk) for d in deliveries]).exists()
    assert not DeliveryAttempt.objects.filter(delivery__notification_id=notification_id).exists()
    for pid in worker_pids:
        assert _status_mb(pid, "VmHWM") - before[pid] < MAX_GROWTH_MB
