"""Rendered manifests, once per session: the base and every overlay under deploy/overlays."""

from __future__ import annotations

import pytest

from tests.deploy import k8s


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """``{"base": [...], "dev": [...], "prod": [...]}`` from ``kubectl kustomize``."""
    if k8s.kubectl() is None:
        pytest.skip("kubectl is not installed: the manifests cannot be rendered (kubectl kustomize) here")
    overlays = sorted(p.name for p in (k8s.DEPLOY / "overlays").iterdir() if p.is_dir())
    assert overlays == sorted(k8s.OVERLAYS), f"overlays found: {overlays}; the tests know {k8s.OVERLAYS}"
    out = {"base": k8s.render(k8s.DEPLOY / "base")}
    for name in overlays:
        out[name] = k8s.render(k8s.DEPLOY / "overlays" / name)
    return out


@pytest.fixture(scope="session")
def tools_venv() -> None:
    """The checks that need checkov, kubernetes-validate or hadolint (``make deploy-tools``)."""
    missing = [name for name in ("checkov", "kubernetes-validate", "hadolint") if k8s.tool(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not in .venv-deploy: run `make deploy-tools` (make test does)")
