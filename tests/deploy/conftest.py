import pytest

from tests.deploy.kustomize_lite import render
from tests.deploy.support import KUSTOMIZATIONS


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every kustomization under deploy/k8s, rendered: {"base": [...], "small": [...], "gpu": [...]}."""
    return {name: render(path) for name, path in KUSTOMIZATIONS.items()}
