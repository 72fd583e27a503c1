"""The Grafana dashboard and the Prometheus alerts use metrics that exist, and cover what they must."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import REGISTRY

import apps.observability.metrics  # noqa: F401  (registers the domain metrics)
from tests.manifests.conftest import K8S, k8s_kind

METRIC = re.compile(r"\b((?:signalbox|django)_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every sample name our processes can export: metrics.py, django-prometheus (middleware, models, db)."""
    import django_prometheus.db.metrics  # noqa: F401
    from django_prometheus.middleware import Metrics

    Metrics.get_instance()  # the HTTP metrics are created with the first middleware instance
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.describe() if hasattr(collector, "describe") else []:
            for suffix in SUFFIXES.get(family.type, ("",)):
                names.add(family.name + suffix)
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((K8S / "components" / "monitoring" / "grafana-dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_rules() -> list[dict]:
    ((_, rules),) = k8s_kind("PrometheusRule")
    return [rule for group in rules["spec"]["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_referenced_exists(source):
    expressions = dashboard_expressions() if source == "dashboard" else [r["expr"] for r in alert_rules()]
    known = exported_names()
    referenced = {name for expression in expressions for name in METRIC.findall(expression)}
    assert referenced, source
    assert not referenced - known, f"{source} references unknown metrics: {sorted(referenced - known)}"


def test_the_alerts_cover_what_operators_are_paged_for():
    expressions = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert "signalbox_dead_letters_total" in expressions["SignalboxDeadLettersRising"]
    assert "signalbox_queue_oldest_age_seconds" in expressions["SignalboxQueueTooOld"]
    assert "signalbox_delivery_attempts_total" in expressions["SignalboxProviderErrorRate"]
    assert "signalbox_sweeper_recovered_total" in expressions["SignalboxSweeperRecovering"]
    assert 'up{component="worker"}' in expressions["SignalboxWorkerDown"]
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_alert_links_a_runbook_section_of_the_operations_guide():
    operations = (K8S.parent / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", operations, re.M)
    }
    for rule in alert_rules():
        runbook = rule["annotations"].get("runbook")  # every alert links one: the page says what to do
        assert runbook and runbook.startswith("docs/operations.md#"), f"{rule['alert']} has no runbook"
        assert runbook.split("#")[1] in anchors, f"{rule['alert']}: {runbook}"


def test_the_dashboard_shows_each_queue_and_delivery_metric():
    expressions = " ".join(dashboard_expressions())
    for name in (
        "signalbox_queue_depth",
        "signalbox_queue_oldest_age_seconds",
        "signalbox_intents_accepted_total",
        "signalbox_deliveries_total",
        "signalbox_delivery_latency_seconds_bucket",
        "signalbox_dead_letters_total",
        "signalbox_worker_active_tasks",
    ):
        assert name in expressions, name
