"""`kubectl apply -k k8s/` as the cluster would receive it: rendered (tests/manifests/render.py), valid
against the Kubernetes JSON schemas (kubernetes-validate), admissible under Pod Security "restricted",
safe to apply again with a new image, with KEDA and monitoring as optional components."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.manifests.conftest import K8S
from tests.manifests.render import render

# The oldest Kubernetes minor still supported upstream when this was written; strict: unknown fields
# (a typo such as `seccompProfle`) fail instead of being silently dropped by the API server.
KUBERNETES_VERSION = "1.32.0"
# Custom resources have no schema in kubernetes-validate: their kinds must at least be these.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
RESTRICTED_VOLUME_TYPES = {
    *("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret")
}


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    ]


def name(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(K8S)


def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(rendered):
    validated = 0
    for obj in rendered:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            assert obj["metadata"]["name"] and obj["metadata"]["namespace"], name(obj)
            continue
        # Raises ValidationError (or SchemaNotFoundError for an unknown kind or apiVersion).
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        validated += 1
    assert validated >= 20


def test_the_schema_validation_catches_a_misspelt_field(rendered):
    (web,) = [o for o in rendered if name(o) == "Deployment/web"]
    web["spec"]["template"]["spec"]["securityContext"]["seccompProfle"] = {"type": "RuntimeDefault"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, KUBERNETES_VERSION, strict=True)


def test_every_namespaced_object_names_its_namespace_and_the_dashboard_goes_to_monitoring(rendered):
    for obj in rendered:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace"), f"{name(obj)} would land in the default namespace"
    (dashboard,) = [o for o in rendered if o["metadata"]["name"] == "signalbox-grafana-dashboard"]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1"}
    namespaces = {o["metadata"]["namespace"] for o in rendered if o["kind"] not in ("Namespace", "ConfigMap")}
    assert namespaces == {"signalbox"}


def test_every_pod_is_admissible_under_pod_security_restricted(rendered):
    (namespace,) = [o for o in rendered if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    specs = pod_specs(rendered)
    assert len(specs) >= 9
    for where, spec in specs:
        pod = spec.get("securityContext", {})
        assert not (spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC")), where
        for volume in spec.get("volumes", []):
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"{where}: volume {volume['name']} is {kinds}"
        for container in spec.get("initContainers", []) + spec["containers"]:
            where_c = f"{where}/{container['name']}"
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, where_c
            assert not context.get("privileged"), where_c
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where_c
            assert set(context.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where_c
            assert context.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where_c
            assert context.get("runAsUser", pod.get("runAsUser")) != 0, where_c
            seccomp = context.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), f"{where_c}: seccompProfile {seccomp}"


def test_every_signalbox_pod_migrates_before_its_process_starts_and_no_job_blocks_a_reapply(rendered):
    # A Job's pod template is immutable: a second apply with a new image failed. Init containers run
    # this release's migrations before any of its processes starts, on every apply.
    assert not [o for o in rendered if o["kind"] == "Job"]
    for where, spec in pod_specs(rendered):
        images = {c["image"].split(":")[0] for c in spec["containers"]}
        if "signalbox" not in images:
            continue
        init = spec.get("initContainers", [])
        assert init, f"{where} starts without running migrations"
        assert init[0]["command"] == ["python", "manage.py", "migrate_and_schedule"], where
        assert init[0]["image"] == spec["containers"][0]["image"], f"{where}: migrations of another release"
        assert [e["configMapRef"]["name"] for e in init[0]["envFrom"] if "configMapRef" in e] == ["signalbox-config"]


def test_autoscaled_deployments_leave_the_replica_count_to_their_autoscaler(rendered):
    autoscalers = [o for o in rendered if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in autoscalers}
    assert {"web", "worker-urgent", "worker-notifications"} <= targets
    for obj in rendered:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in targets:
            assert "replicas" not in obj["spec"], f"{name(obj)}: every apply would scale it back to replicas"


def test_beat_has_a_heartbeat_liveness_probe(rendered):
    (beat,) = [o for o in rendered if name(o) == "Deployment/beat"]
    container = beat["spec"]["template"]["spec"]["containers"][0]
    assert "workers.beat_scheduler:HeartbeatScheduler" in container["command"]
    heartbeat = {e["name"]: e["value"] for e in container["env"]}["BEAT_HEARTBEAT_FILE"]
    probe = container["livenessProbe"]["exec"]["command"]
    assert probe[:3] == ["python", "-m", "workers.probe"] and heartbeat in probe


def test_keda_and_monitoring_are_optional_components(tmp_path: Path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = yaml.safe_load((copy / "kustomization.yaml").read_text())
    assert kustomization["components"] == ["components/keda", "components/monitoring"]
    del kustomization["components"]
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    bare = render(copy)
    kinds = {o["kind"] for o in bare}
    assert not kinds & {"ScaledObject", "PodMonitor", "PrometheusRule"}
    assert "signalbox-grafana-dashboard" not in {o["metadata"]["name"] for o in bare}
    assert {name(o) for o in bare if o["kind"] == "Deployment"} >= {"Deployment/web", "Deployment/beat"}
    for obj in bare:
        if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
