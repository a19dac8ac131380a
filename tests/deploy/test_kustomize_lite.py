"""The renderer the Kubernetes tests rely on: it does what kustomize does for the features deploy/k8s uses, and
refuses every other one rather than rendering something kustomize would render differently."""

import pytest
import yaml

from tests.deploy.kustomize_lite import UnsupportedKustomization, json_patch, render

DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "w", "labels": {"app.kubernetes.io/component": "worker", "tier": "gpu"}},
    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "registry:5000/org/worker:1.0",
                                                    "env": [{"name": "A", "value": "1"}]}]}}},
}


def write(folder, kustomization: dict, resources: list[dict] | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **kustomization}))
    if resources is not None:
        (folder / "r.yaml").write_text(yaml.safe_dump_all(resources))
    return folder


def test_resources_namespace_images_and_patches(tmp_path):
    write(tmp_path / "base", {"resources": ["r.yaml"]},
          [DEPLOYMENT, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}])
    overlay = write(tmp_path / "overlay", {
        "resources": ["../base"], "namespace": "ns",
        "images": [{"name": "registry:5000/org/worker", "newName": "org/worker-gpu", "newTag": "2.0"}],
        "patches": [{"target": {"kind": "Deployment", "labelSelector": "app.kubernetes.io/component=worker,tier=gpu"},
                     "patch": "- {op: add, path: /spec/template/spec/containers/0/env/-,"
                              " value: {name: B, value: '2'}}\n"
                              "- {op: replace, path: /metadata/labels/tier, value: cpu}\n"
                              "- {op: add, path: /metadata/annotations, value: {a~1b: x}}\n"
                              "- {op: remove, path: /spec/template/spec/containers/0/env/0}"}],
    })
    deployment, namespace = render(overlay)
    assert deployment["metadata"]["namespace"] == "ns" and "namespace" not in namespace["metadata"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "org/worker-gpu:2.0"
    assert container["env"] == [{"name": "B", "value": "2"}]
    assert deployment["metadata"]["labels"]["tier"] == "cpu"
    assert deployment["metadata"]["annotations"] == {"a~1b": "x"}


def test_json_pointer_escapes_and_errors():
    doc = {"a": {"b/c": 1, "d~e": 2}, "l": [1, 2]}
    json_patch(doc, {"op": "replace", "path": "/a/b~1c", "value": 3})
    json_patch(doc, {"op": "test", "path": "/a/d~0e", "value": 2})
    json_patch(doc, {"op": "add", "path": "/l/0", "value": 0})
    assert doc == {"a": {"b/c": 3, "d~e": 2}, "l": [0, 1, 2]}
    with pytest.raises(KeyError):
        json_patch(doc, {"op": "replace", "path": "/a/missing", "value": 1})
    with pytest.raises(IndexError):
        json_patch(doc, {"op": "replace", "path": "/l/3", "value": 1})
    with pytest.raises(ValueError):
        json_patch(doc, {"op": "test", "path": "/l/0", "value": 9})
    with pytest.raises(UnsupportedKustomization):
        json_patch(doc, {"op": "move", "from": "/l/0", "path": "/l/1"})


@pytest.mark.parametrize("kustomization", [
    {"resources": ["r.yaml"], "configMapGenerator": [{"name": "x", "literals": ["a=b"]}]},
    {"resources": ["r.yaml"], "commonLabels": {"a": "b"}},
    {"resources": ["r.yaml"], "patches": [{"path": "patch.yaml"}]},
    {"resources": ["r.yaml"], "patches": [{"target": {"kind": "Deployment"},
                                            "patch": "spec: {replicas: 2}"}]},  # strategic merge
    {"resources": ["r.yaml"], "patches": [{"target": {"kind": "Service"},
                                            "patch": "- {op: add, path: /x, value: 1}"}]},  # matches nothing
    {"resources": ["r.yaml", "r.yaml"]},  # the same resource twice
])
def test_refuses_what_it_does_not_render_like_kustomize(tmp_path, kustomization):
    with pytest.raises(UnsupportedKustomization):
        render(write(tmp_path, kustomization, [DEPLOYMENT]))
