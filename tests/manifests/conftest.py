"""Loading the deployment files: docker-compose.yml, every k8s manifest, the Procfile.

No Docker engine or cluster runs here, so the tests read the files and check that what they run
exists in this repository: modules, Celery apps, manage.py commands, queues, URL paths.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"


@dataclass(frozen=True)
class Command:
    where: str  # "compose:web", "k8s:web.yaml/Deployment/web/web", "Procfile:web"
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def split_shell(argv: list[str]) -> list[list[str]]:
    """`sh -c "a && b"` -> [[a...], [b...]]; anything else as it is."""
    if len(argv) >= 3 and argv[0] in ("sh", "/bin/sh", "bash") and argv[1] == "-c":
        return [shlex.split(part) for part in re.split(r"&&|;", argv[2]) if part.strip()]
    return [argv]


def strip_env(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Leading `NAME=value` words (Procfile lines) become the command's environment."""
    env: dict[str, str] = {}
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
        name, _, value = argv[0].partition("=")
        env[name] = value
        argv = argv[1:]
    return argv, env


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":  # kustomize's own files (tests/manifests/render.py renders them)
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((str(path.relative_to(K8S)), document))
    return documents


def k8s_kind(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(path, doc) for path, doc in k8s_documents() if doc["kind"] == kind]


def pod_spec(document: dict[str, Any]) -> dict[str, Any] | None:
    if document["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return document["spec"]["template"]["spec"]
    return None


def procfile() -> dict[str, str]:
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            lines[name.strip()] = command.strip()
    return lines


def as_argv(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def all_commands() -> list[Command]:
    """Every command a deployment file runs, probes included."""
    commands: list[Command] = []

    for name, service in compose()["services"].items():
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        if service.get("command"):
            for argv in split_shell(as_argv(service["command"])):
                commands.append(Command(f"compose:{name}", tuple(argv), tuple(env.items())))
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] in ("CMD", "CMD-SHELL"):
            argv = test[1:] if test[0] == "CMD" else shlex.split(test[1])
            commands.append(Command(f"compose:{name}:healthcheck", tuple(argv), tuple(env.items())))

    for path, document in k8s_documents():
        spec = pod_spec(document)
        if spec is None:
            continue
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            where = f"k8s:{path}/{document['kind']}/{document['metadata']['name']}/{container['name']}"
            env = {e["name"]: str(e.get("value", "")) for e in container.get("env", [])}
            argv = [*container.get("command", []), *container.get("args", [])]
            for part in split_shell(argv):
                commands.append(Command(where, tuple(part), tuple(env.items())))
            for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(probe_name) or {}
                if "exec" in probe:
                    commands.append(
                        Command(f"{where}:{probe_name}", tuple(probe["exec"]["command"]), tuple(env.items()))
                    )
            for hook in (container.get("lifecycle") or {}).values():
                if "exec" in hook:
                    commands.append(Command(f"{where}:lifecycle", tuple(hook["exec"]["command"]), tuple(env.items())))

    for name, line in procfile().items():
        argv, env = strip_env(shlex.split(line))
        commands.append(Command(f"Procfile:{name}", tuple(argv), tuple(env.items())))
    return commands


def option(argv: tuple[str, ...] | list[str], *names: str) -> str | None:
    """The value of `-Q x`, `--conf=x`, `--conf x`."""
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                return argv[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


@pytest.fixture(scope="session")
def commands() -> list[Command]:
    return all_commands()
