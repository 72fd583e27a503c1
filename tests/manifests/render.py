"""Rendering k8s/ as `kubectl apply -k k8s/` would, for the subset of kustomize this repository uses.

No kustomize binary is installable from the registries this project uses, so this implements the
fields k8s/ uses (resources, components, configMapGenerator, images, namespace) and refuses any other
field: a kustomization that grows a feature this does not know fails the tests instead of being
rendered wrongly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN_FIELDS = {"apiVersion", "kind", "resources", "components", "configMapGenerator", "images", "namespace"}
KNOWN_GENERATOR_FIELDS = {"name", "namespace", "files", "options"}
KNOWN_OPTIONS = {"disableNameSuffixHash", "labels"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}


class UnsupportedKustomization(Exception):
    """The kustomization uses a field this renderer does not implement."""


def _load(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(data) - KNOWN_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: fields {sorted(unknown)} are not rendered by tests/manifests")
    return data


def _generate_config_map(directory: Path, generator: dict[str, Any]) -> dict[str, Any]:
    unknown = set(generator) - KNOWN_GENERATOR_FIELDS | set(generator.get("options", {})) - KNOWN_OPTIONS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: configMapGenerator fields {sorted(unknown)}")
    options = generator.get("options", {})
    if not options.get("disableNameSuffixHash"):
        raise UnsupportedKustomization(f"{directory}: name suffix hashes are not rendered")
    metadata: dict[str, Any] = {"name": generator["name"]}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    files = {Path(f).name: (directory / f).read_text() for f in generator.get("files", [])}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": files}


def _objects(directory: Path, expect_kind: str) -> list[dict[str, Any]]:
    data = _load(directory)
    if data.get("kind") != expect_kind:
        raise UnsupportedKustomization(f"{directory}: expected a {expect_kind}, found {data.get('kind')}")
    objects: list[dict[str, Any]] = []
    for resource in data.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += _objects(path, "Kustomization")
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for generator in data.get("configMapGenerator", []):
        objects.append(_generate_config_map(directory, generator))
    for component in data.get("components", []):
        objects += _objects(directory / component, "Component")
    if data.get("namespace"):
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = data["namespace"]
    for image in data.get("images", []):
        _set_image(objects, image)
    return objects


def _set_image(objects: list[dict[str, Any]], image: dict[str, Any]) -> None:
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', 'latest')}"


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k directory` would send, in order."""
    return [copy.deepcopy(obj) for obj in _objects(directory, "Kustomization")]
