"""Helpers for the deploy/ checks: rendering with kustomize, selecting objects, label matching,
and the external tools (checkov, kubernetes-validate, hadolint) in their own venv.

The tools live in ``.venv-deploy`` (``make deploy-tools``, from deploy/tools-requirements.lock)
because their dependencies conflict with the project's; they are always run as subprocesses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TOOLS_BIN = REPO / ".venv-deploy" / "bin"
OVERLAYS = ("dev", "prod")
GRPC_SERVICES = ("auth", "messaging", "consent", "notify")
SERVICES = (*GRPC_SERVICES, "web")
NAME_LABEL = "app.kubernetes.io/name"
# The Kubernetes release the manifests target (kubectl v1.32 here; schemas of the same minor).
KUBERNETES_VERSION = "1.32.0"
# Kinds that are not Kubernetes' own: no schema in kubernetes-validate, checked by shape instead.
CUSTOM_KINDS = {("postgresql.cnpg.io/v1", "Cluster")}


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(path: Path) -> list[dict]:
    """``kubectl kustomize PATH`` as a list of objects."""
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def tool(name: str) -> Path | None:
    path = TOOLS_BIN / name
    return path if path.exists() else None


def run_tool(name: str, *args: str, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOLS_BIN / name), *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin)


def checkov(directory: Path, framework: str) -> list[dict]:
    """Run checkov offline on a directory; its failed checks (check_id, resource, file_path, ...)."""
    result = run_tool("checkov", "--directory", str(directory), "--framework", framework, "--output", "json",
                      "--quiet", "--compact", "--skip-download", "--no-fail-on-crash")
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"checkov gave no JSON report (exit {result.returncode}):\n{result.stderr[-3000:]}") from None
    reports = [r for r in (report if isinstance(report, list) else [report]) if r.get("check_type") == framework]
    # A scan that parsed nothing also finds nothing: make sure it read the files.
    assert len(reports) == 1, f"checkov reported no {framework} scan: {result.stdout[:2000]}"
    summary = reports[0]["summary"]
    assert summary["parsing_errors"] == 0 and summary["resource_count"] > 0, summary
    return reports[0]["results"].get("failed_checks", [])


def of_kind(docs: Iterable[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc.get("kind") == kind]


def named(docs: Iterable[dict], kind: str, name: str) -> dict:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def selector_matches(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a label set."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(docs: Iterable[dict]) -> dict[str, dict[str, str]]:
    """Each Deployment's pod labels, by the service it runs (its app.kubernetes.io/name)."""
    pods = {}
    for deployment in of_kind(docs, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        pods[labels[NAME_LABEL]] = labels
    return pods


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']} should run one container"
    return containers[0]


def migrate_container(deployment: dict) -> dict:
    """The init container that applies a gRPC service's migrations before it starts."""
    init = deployment["spec"]["template"]["spec"].get("initContainers", [])
    assert [c["name"] for c in init] == ["migrate"], f"{deployment['metadata']['name']}: init containers {init}"
    return init[0]


def all_containers(deployment: dict) -> list[dict]:
    """The init containers, then the container: every one the pod runs."""
    pod = deployment["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), container(deployment)]


def container_env(docs: list[dict], deployment: dict, spec: dict | None = None) -> dict[str, str]:
    """The environment a Deployment's container (or ``spec``, one of its init containers) gets:
    its ConfigMaps (envFrom), then its env."""
    env: dict[str, str] = {}
    spec = spec or container(deployment)
    for source in spec.get("envFrom", []):
        env.update(named(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in spec.get("env", []):
        assert "value" in item, f"{item['name']}: settings are values or files, never valueFrom secrets in env"
        env[item["name"]] = item["value"]
    return env


def grpc_port(deployment: dict) -> int:
    return next(p["containerPort"] for p in container(deployment)["ports"] if p["name"] == "grpc")
