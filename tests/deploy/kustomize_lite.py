"""Renders deploy/k8s kustomizations without kubectl: the small subset of kustomize that deploy/k8s uses.

Supported fields: resources (YAML files and directories with a kustomization.yaml), namespace, images (name,
newName, newTag, digest) and patches given inline as RFC 6902 JSON patches with a target (kind, name, namespace,
group, version, equality-based labelSelector). Anything else (strategic-merge patches, generators, components,
labels transformers...) raises UnsupportedKustomization, so deploy/k8s cannot quietly start relying on a feature
whose result these tests would not see. Stricter than kustomize where kustomize is lenient: a patch whose target
matches nothing, or two resources with the same kind/namespace/name, is an error.

The real command stays `kubectl apply -k deploy/k8s/overlays/<name>` (or `kustomize build`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
                  "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass"}


class UnsupportedKustomization(ValueError):
    pass


def render(directory: Path) -> list[dict]:
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedKustomization(f"{directory}: fields not supported here: {sorted(unknown)}")
    if (kustomization.get("apiVersion"), kustomization.get("kind")) != ("kustomize.config.k8s.io/v1beta1",
                                                                       "Kustomization"):
        raise UnsupportedKustomization(f"{directory}: not a kustomize.config.k8s.io/v1beta1 Kustomization")

    docs: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            docs += render(path)
        elif path.is_file():
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        else:
            raise FileNotFoundError(f"{directory}: resource {entry} does not exist")

    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc.setdefault("metadata", {})["namespace"] = namespace
    for image in kustomization.get("images", []):
        _set_image(docs, image, directory)
    for patch in kustomization.get("patches", []):
        _apply_patch(docs, patch, directory)

    seen = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        if key in seen:
            raise UnsupportedKustomization(f"{directory}: {key} is defined twice")
        seen.add(key)
    return docs


# --- images -------------------------------------------------------------------------------------------------------
def pod_specs(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "Pod":
        return [spec]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if "template" in spec and "spec" in spec["template"]:
        return [spec["template"]["spec"]]
    return []


def containers(doc: dict) -> list[dict]:
    return [c for pod in pod_specs(doc) for c in pod.get("initContainers", []) + pod.get("containers", [])]


def split_image(image: str) -> tuple[str, str | None, str | None]:
    name, digest = (image.split("@", 1) + [None])[:2]
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def _set_image(docs: list[dict], rule: dict, directory: Path) -> None:
    unknown = set(rule) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise UnsupportedKustomization(f"{directory}: images fields not supported: {sorted(unknown)}")
    for doc in docs:
        for container in containers(doc):
            name, tag, digest = split_image(container["image"])
            if name != rule["name"]:
                continue
            name = rule.get("newName", name)
            tag = rule.get("newTag", tag)
            digest = rule.get("digest", digest)
            container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# --- patches ------------------------------------------------------------------------------------------------------
def _matches(doc: dict, target: dict) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    metadata = doc["metadata"]
    checks = {
        "kind": doc["kind"], "name": metadata["name"], "namespace": metadata.get("namespace"),
        "group": group, "version": version,
    }
    for key, value in target.items():
        if key == "labelSelector":
            labels = metadata.get("labels", {})
            for term in value.split(","):
                label, sep, wanted = term.partition("=")
                if not sep or "!" in label or labels.get(label.strip()) != wanted.strip():
                    return False
        elif key in checks:
            if checks[key] != value:
                return False
        else:
            raise UnsupportedKustomization(f"patch target field not supported: {key}")
    return True


def _apply_patch(docs: list[dict], patch: dict, directory: Path) -> None:
    if set(patch) != {"target", "patch"}:
        raise UnsupportedKustomization(f"{directory}: only inline patches with a target are supported: {patch}")
    operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise UnsupportedKustomization(f"{directory}: only JSON 6902 patches (a list of operations) are supported")
    matched = [doc for doc in docs if _matches(doc, patch["target"])]
    if not matched:
        raise UnsupportedKustomization(f"{directory}: patch target {patch['target']} matches no resource")
    for doc in matched:
        for operation in operations:
            json_patch(doc, operation)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _index(container: list, token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    index = int(token)
    if not 0 <= index < len(container) + (1 if allow_end else 0):
        raise IndexError(f"index {index} out of range")
    return index


def json_patch(doc: Any, operation: dict) -> None:
    """One RFC 6902 operation (add, remove, replace, test) applied to ``doc`` in place."""
    op = operation["op"]
    *parents, last = _pointer(operation["path"])
    target = doc
    for token in parents:
        target = target[_index(target, token, False)] if isinstance(target, list) else target[token]
    value = copy.deepcopy(operation.get("value"))
    if op == "add":
        if isinstance(target, list):
            target.insert(_index(target, last, True), value)
        else:
            target[last] = value
    elif op == "replace":
        if isinstance(target, list):
            target[_index(target, last, False)] = value
        else:
            if last not in target:
                raise KeyError(f"replace: {operation['path']} does not exist")
            target[last] = value
    elif op == "remove":
        if isinstance(target, list):
            del target[_index(target, last, False)]
        else:
            del target[last]
    elif op == "test":
        current = target[_index(target, last, False)] if isinstance(target, list) else target[last]
        if current != value:
            raise ValueError(f"test failed at {operation['path']}: {current!r} != {value!r}")
    else:
        raise UnsupportedKustomization(f"JSON patch operation not supported: {op}")
