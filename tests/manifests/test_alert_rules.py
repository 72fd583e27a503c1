"""The alert rules, unit-tested with Prometheus' own `promtool test rules` on synthetic series.

promtool comes with Debian's `prometheus` package; scripts/ensure_services.sh installs it for
`make test`, and this file fails (never skips) when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests.conftest import k8s_kind
from workers.queues import WORKER_GROUPS

RUNBOOK = "docs/operations.md#{}"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is required (apt-get install prometheus; scripts/ensure_services.sh installs it)")
    return path


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    ((_, rule), *_) = k8s_kind("PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def run_promtool(promtool: str, rules_file: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    test_file = rules_file.parent / "tests.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests}))
    return subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, cwd=rules_file.parent, check=False
    )


def test_the_rules_are_valid_prometheus_rules(promtool, rules_file):
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def worker_series(down: set[str], missing: set[str]) -> list[dict[str, str]]:
    return [
        {
            "series": f'up{{component="worker", worker_group="{group}", pod="worker-{group}-1"}}',
            "values": "0x30" if group in down else "1x30",
        }
        for group in WORKER_GROUPS
        if group not in missing
    ]


def group_down_alert(group: str) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": "critical", "worker_group": group},
        "exp_annotations": {
            "summary": f"No {group} worker is up: its queues are not consumed",
            "runbook": RUNBOOK.format("stuck-queue"),
        },
    }


def test_a_down_worker_group_fires_one_alert_that_names_the_group(promtool, rules_file):
    # Before: a second copy without the worker_group label fired alongside (absent() drops labels).
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": worker_series(down={"notifications"}, missing={"maintenance"}),
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "SignalboxWorkerGroupDown", "exp_alerts": []},
                {
                    "eval_time": "10m",
                    "alertname": "SignalboxWorkerGroupDown",
                    "exp_alerts": [group_down_alert("notifications"), group_down_alert("maintenance")],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": worker_series(down=set(), missing=set()),
            "alert_rule_test": [{"eval_time": "10m", "alertname": "SignalboxWorkerGroupDown", "exp_alerts": []}],
        },
    ]
    result = run_promtool(promtool, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr


def task_runs(task: str, values: str) -> dict[str, str]:
    return {"series": f'signalbox_celery_tasks_total{{task="{task}", queue="q", state="success"}}', "values": values}


def test_beat_not_ticking_fires_when_its_periodic_jobs_stop_running(promtool, rules_file):
    beat_alert = {
        "exp_labels": {"severity": "critical"},
        "exp_annotations": {
            "summary": (
                "Beat has published no periodic job for 15 minutes: retries, sweeps and schedules are not running"
            ),
            "runbook": RUNBOOK.format("beat-not-ticking"),
        },
    }
    ticking = "0+12x40"  # 12 runs a minute: every 5 s
    stopped = "0+12x10 120x30"  # beat stops after 10 minutes
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": [
                task_runs("signalbox.notifications.dispatch_due", ticking),
                task_runs("signalbox.webhooks.dispatch_due", ticking),
            ],
            "alert_rule_test": [{"eval_time": "40m", "alertname": "SignalboxBeatNotTicking", "exp_alerts": []}],
        },
        {
            "interval": "1m",
            "input_series": [
                task_runs("signalbox.notifications.dispatch_due", stopped),
                task_runs("signalbox.webhooks.dispatch_due", stopped),
            ],
            "alert_rule_test": [
                {"eval_time": "12m", "alertname": "SignalboxBeatNotTicking", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "SignalboxBeatNotTicking", "exp_alerts": [beat_alert]},
            ],
        },
        {
            # Only the webhooks group stopped: that is SignalboxWorkerGroupDown's page, not beat's.
            "interval": "1m",
            "input_series": [
                task_runs("signalbox.notifications.dispatch_due", ticking),
                task_runs("signalbox.webhooks.dispatch_due", stopped),
            ],
            "alert_rule_test": [{"eval_time": "30m", "alertname": "SignalboxBeatNotTicking", "exp_alerts": []}],
        },
    ]
    result = run_promtool(promtool, rules_file, tests)
    assert result.returncode == 0, result.stdout + result.stderr
