"""docker-compose.yml, k8s/ and the Procfile run real things: modules, apps, commands, queues, paths."""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import get_commands
from django.urls import Resolver404, resolve

from tests.manifests.conftest import (
    K8S,
    ROOT,
    Command,
    all_commands,
    compose,
    k8s_documents,
    k8s_kind,
    option,
    pod_spec,
    procfile,
)
from workers.queues import PRIORITY_QUEUES, QUEUE_NAMES, QUEUE_SPECS, WORKER_GROUPS

# Executables of the infrastructure images (postgres, redis) and of probes; ours are checked below.
INFRASTRUCTURE = {"redis-server", "redis-cli", "pg_isready", "sleep"}
FLOWER_PATHS = {"/healthcheck"}  # Flower's own, unauthenticated health endpoint


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def check_python(command: Command) -> None:
    argv = command.argv
    if argv[1] == "-m":
        assert module_exists(argv[2]), f"{command.where}: no module {argv[2]}"
        if argv[2] == "sandbox":
            return
        assert argv[2] in ("apps.observability.exporter", "workers.probe"), f"{command.where}: unexpected {argv[2]}"
    elif argv[1] == "manage.py":
        assert argv[2] in get_commands(), f"{command.where}: no manage.py command {argv[2]!r}"
    elif argv[1] == "-c":
        for url in re.findall(r"https?://[^'\" ]+", argv[2]):
            path = urlsplit(url).path
            assert path in FLOWER_PATHS or resolves(path), f"{command.where}: {path} is not a URL of ours"
    else:
        pytest.fail(f"{command.where}: unexpected python invocation {argv}")


def check_celery(command: Command) -> None:
    argv = command.argv
    app_path = option(argv, "-A", "--app")
    assert app_path == "workers.celery", f"{command.where}: -A {app_path}"
    assert hasattr(importlib.import_module(app_path), "app")
    subcommand = next(word for word in argv[3:] if not word.startswith("-"))
    assert subcommand in ("worker", "beat", "flower"), f"{command.where}: celery {subcommand}"
    if subcommand == "worker":
        queues = option(argv, "-Q", "--queues")
        assert queues, f"{command.where}: a worker must name its queues (-Q)"
        unknown = set(queues.split(",")) - set(QUEUE_NAMES)
        assert not unknown, f"{command.where}: unknown queues {unknown}"
        assert option(argv, "-n", "--hostname"), f"{command.where}: name the worker (-n group@%h)"
    if subcommand == "flower":
        conf = option(argv, "--conf")
        assert conf and (ROOT / conf).is_file(), f"{command.where}: flower --conf={conf} is not a file"


def check_gunicorn(command: Command) -> None:
    argv = command.argv
    config = option(argv, "-c", "--config")
    assert config and config.startswith("python:") and module_exists(config.removeprefix("python:"))
    app = argv[-1]
    module, _, attribute = app.partition(":")
    assert hasattr(importlib.import_module(module), attribute or "application"), f"{command.where}: {app}"


def check_uvicorn(command: Command) -> None:
    app = next(word for word in command.argv[1:] if not word.startswith("-") and ":" in word)
    module, _, attribute = app.partition(":")
    assert hasattr(importlib.import_module(module), attribute), f"{command.where}: {app}"


def resolves(path: str) -> bool:
    try:
        resolve(path)
        return True
    except Resolver404:
        return False


@pytest.mark.parametrize("command", all_commands(), ids=lambda c: c.where)
def test_every_command_runs_something_that_exists(command):
    executable = Path(command.argv[0]).name
    if executable in ("python", "python3"):
        check_python(command)
    elif executable == "celery":
        check_celery(command)
    elif executable == "gunicorn":
        check_gunicorn(command)
    elif executable == "uvicorn":
        check_uvicorn(command)
    else:
        assert executable in INFRASTRUCTURE, f"{command.where}: unknown executable {executable!r}"


def worker_queue_sets(where_prefix: str) -> dict[str, frozenset[str]]:
    sets = {}
    for command in all_commands():
        if command.where.startswith(where_prefix) and "worker" in command.argv and command.argv[0] == "celery":
            sets[command.where] = frozenset((option(command.argv, "-Q") or "").split(","))
    return sets


@pytest.mark.parametrize("where", ["compose:", "k8s:", "Procfile:"])
def test_each_layout_runs_one_worker_per_queue_group_and_consumes_every_queue(where):
    sets = worker_queue_sets(where)
    assert sorted(sets.values(), key=sorted) == sorted(
        (frozenset(queues) for queues in WORKER_GROUPS.values()), key=sorted
    ), f"{where} worker -Q sets differ from workers/queues.py WORKER_GROUPS"
    consumed = set().union(*sets.values())
    assert consumed == set(QUEUE_NAMES)


def test_urgent_notifications_have_a_worker_group_of_their_own_that_never_scales_to_zero():
    # A worker that also consumed notifications.bulk could be busy on bulk send batches with every
    # process while a password reset waits.
    urgent = PRIORITY_QUEUES["high"]
    (group,) = [spec.group for spec in QUEUE_SPECS if spec.name == urgent]
    assert WORKER_GROUPS[group] == (urgent,)
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for _, d in k8s_kind("ScaledObject")}
    assert scaled[f"worker-{group}"]["spec"]["minReplicaCount"] >= 1


def test_each_layout_runs_exactly_one_beat():
    beats = defaultdict(list)
    for command in all_commands():
        if command.argv[:1] == ("celery",) and "beat" in command.argv:
            beats[command.where.split(":")[0]].append(command.where)
    assert {layout: len(found) for layout, found in beats.items()} == {"compose": 1, "k8s": 1, "Procfile": 1}
    (_, beat), *_ = [(p, d) for p, d in k8s_kind("Deployment") if d["metadata"]["name"] == "beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"  # never two during a rollout


def test_k8s_http_probes_point_at_real_paths():
    checked = 0
    for path, document in k8s_documents():
        spec = pod_spec(document)
        for container in (spec or {}).get("containers", []):
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                http = (container.get(probe_name) or {}).get("httpGet")
                if http:
                    checked += 1
                    ports = {p["name"] for p in container.get("ports", [])}
                    assert http["port"] in ports, f"{path}: probe port {http['port']} not declared"
                    if container["name"] == "flower":
                        assert http["path"] in FLOWER_PATHS
                    else:
                        assert resolves(http["path"]), f"{path}: {http['path']} does not resolve"
    assert checked >= 5


def test_the_web_probes_are_healthz_for_liveness_and_readyz_for_readiness():
    (_, web), *_ = [(p, d) for p, d in k8s_kind("Deployment") if d["metadata"]["name"] == "web"]
    container = web["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert resolve("/healthz").url_name == "healthz" and resolve("/readyz").url_name == "readyz"
    assert resolve("/metrics").url_name == "prometheus-django-metrics"


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}


def test_workers_shut_down_softly_within_their_grace_period():
    workers = [
        d for _, d in k8s_kind("Deployment") if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    assert len(workers) == len(WORKER_GROUPS)
    for worker in workers:
        spec = worker["spec"]["template"]["spec"]
        env = env_of(spec["containers"][0])
        assert env["REMAP_SIGTERM"] == "SIGQUIT"
        assert float(env["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"]) + 15 <= spec["terminationGracePeriodSeconds"]
        assert env["PROMETHEUS_MULTIPROC_DIR"] and env["WORKER_METRICS_PORT"] and env["WORKER_HEARTBEAT_FILE"]
        assert spec["containers"][0]["livenessProbe"]["exec"]["command"][:3] == ["python", "-m", "workers.probe"]


def test_web_drains_requests_within_its_grace_period():
    (_, web), *_ = [(p, d) for p, d in k8s_kind("Deployment") if d["metadata"]["name"] == "web"]
    spec = web["spec"]["template"]["spec"]
    container = spec["containers"][0]
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    graceful = int(env_of(container)["GUNICORN_GRACEFUL_TIMEOUT"])
    assert pre_stop + graceful < spec["terminationGracePeriodSeconds"]
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_every_container_has_requests_and_limits_and_runs_as_non_root():
    for path, document in k8s_documents():
        spec = pod_spec(document)
        if spec is None:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True, path
        for container in spec["containers"] + spec.get("initContainers", []):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"]), (
                f"{path}/{container['name']}"
            )


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_scaled_deployments_have_a_disruption_budget_and_singletons_do_not():
    budgets = [d["spec"]["selector"]["matchLabels"] for _, d in k8s_kind("PodDisruptionBudget")]
    for _, deployment in k8s_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covered = any(labels_match(selector, labels) for selector in budgets)
        singleton = deployment["spec"].get("strategy", {}).get("type") == "Recreate"
        assert covered != singleton, deployment["metadata"]["name"]


def test_every_worker_group_scales_on_its_own_queue_depth():
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for _, d in k8s_kind("ScaledObject")}
    for group, queues in WORKER_GROUPS.items():
        trigger = scaled[f"worker-{group}"]["spec"]["triggers"][0]
        query = trigger["metadata"]["query"]
        assert "signalbox_queue_depth" in query
        match = re.search(r'queue=~"([^"]+)"', query)
        assert match, query
        regex = match.group(1).replace("\\\\", "\\")
        assert {q for q in QUEUE_NAMES if re.fullmatch(regex, q)} == set(queues), group


def test_services_select_pods_and_name_their_ports():
    deployments = [d for _, d in k8s_kind("Deployment")]
    for path, service in k8s_kind("Service"):
        selector = service["spec"]["selector"]
        (target,) = [d for d in deployments if labels_match(selector, d["spec"]["template"]["metadata"]["labels"])]
        ports = {p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{path}: {port}"


def test_pods_reference_config_secrets_and_volumes_that_are_defined():
    config_maps = {d["metadata"]["name"] for _, d in k8s_kind("ConfigMap")}
    secrets = {d["metadata"]["name"] for _, d in k8s_kind("Secret")}
    claims = {d["metadata"]["name"] for _, d in k8s_kind("PersistentVolumeClaim")}
    for path, document in k8s_documents():
        spec = pod_spec(document)
        if spec is None:
            continue
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, path
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, path
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, path


def kustomize_files(directory: Path) -> set[Path]:
    """The files a kustomization (and its components) reads."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    files: set[Path] = set()
    for entry in kustomization.get("resources", []):
        path = directory / entry
        files |= kustomize_files(path) if path.is_dir() else {path}
    for component in kustomization.get("components", []):
        files |= kustomize_files(directory / component)
    for generator in kustomization.get("configMapGenerator", []):
        files |= {directory / file for file in generator["files"]}
    return files


def test_kustomization_lists_every_manifest():
    files = kustomize_files(K8S)
    assert all(path.is_file() for path in files), sorted(str(p) for p in files if not p.is_file())
    on_disk = {p for p in K8S.rglob("*") if p.is_file() and p.name != "kustomization.yaml"}
    assert {p.relative_to(K8S) for p in on_disk - files} == {Path("secret.example.yaml")}


def test_compose_mirrors_the_process_layout():
    services = compose()["services"]
    assert {"postgres", "pgbouncer", "redis", "migrate", "web", "beat", "flower", "metrics"} <= set(services)
    assert {f"worker-{group}" for group in WORKER_GROUPS} <= set(services)
    for group in WORKER_GROUPS:
        worker = services[f"worker-{group}"]
        assert worker["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
        grace = int(worker["stop_grace_period"].removesuffix("s"))
        assert float(worker["environment"]["CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"]) < grace
        assert worker["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}


def test_procfile_serves_worker_metrics_on_distinct_ports_and_directories():
    commands = [c for c in all_commands() if c.where.startswith("Procfile:worker-")]
    ports = [dict(c.env)["WORKER_METRICS_PORT"] for c in commands]
    directories = [dict(c.env)["PROMETHEUS_MULTIPROC_DIR"] for c in commands]
    assert len(set(ports)) == len(set(directories)) == len(commands) == len(WORKER_GROUPS)
    assert "metrics" in procfile()


def test_every_yaml_file_parses():
    for path in [ROOT / "docker-compose.yml", *K8S.rglob("*.yaml")]:
        assert list(yaml.safe_load_all(path.read_text())), path
