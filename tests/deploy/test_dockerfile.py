"""The Dockerfile keeps its rules. No Docker engine runs here, so it is checked statically: parsed
into stages and instructions, linted by hadolint and scanned by checkov; and the image's
dependency set (pyproject.toml's runtime list at requirements.lock's pins) is checked against
what the services import."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass, field

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy import k8s

DOCKERFILE = k8s.REPO / "Dockerfile"
# An exact Python 3.11 patch release of the slim image on a named Debian release, or a digest.
PINNED_BASE = re.compile(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?|[^@\s]+@sha256:[0-9a-f]{64}")
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|gcc|g\+\+|cc|make|build-essential|pip\s+install|git)\b")
# Only generates code in the build stage; it stays out of the runtime venv.
BUILD_ONLY_DEPENDENCIES = {"grpcio-tools"}
# services/common/pgserver.py provides PostgreSQL to tests and `make run` (never to a deployed
# service): it imports these lazily, and they are development dependencies.
DEVELOPMENT_ONLY_IMPORTS = {("services/common/pgserver.py", "docker"), ("services/common/pgserver.py", "testcontainers")}


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their (INSTRUCTION, arguments) pairs; comments and line continuations handled."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def test_multi_stage_on_one_pinned_base(stages):
    assert [s.name for s in stages] == ["build", "runtime"]
    bases = {s.base for s in stages}
    assert len(bases) == 1, f"both stages should use the same base, not {bases}"
    (base,) = bases
    assert PINNED_BASE.fullmatch(base), f"{base} is not pinned to an exact release (or a digest)"


def test_protos_are_generated_in_the_build_stage(stages):
    build, runtime = stages
    assert any("grpc_tools.protoc" in run and "/app/gen" in run for run in build.all("RUN"))
    assert any(copy.split()[0] == "protos/" for copy in build.all("COPY"))
    assert not any("protoc" in run for run in runtime.all("RUN"))


def test_the_runtime_stage_has_no_build_tools(stages):
    runtime = stages[-1]
    for run in runtime.all("RUN"):
        # Removing pip is the only package-manager use allowed here.
        assert not BUILD_TOOLS.search(run.replace("pip uninstall", "")), f"build tooling in the runtime stage: {run}"
    copies = runtime.all("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies), copies
    assert {tuple(c.split()[1:]) for c in copies} == {("/opt/venv", "/opt/venv"), ("/app", "/app")}
    build_runs = " ".join(stages[0].all("RUN"))
    assert "pip uninstall" in build_runs and "--only-binary=:all:" in build_runs


def test_runs_as_a_numeric_non_root_user(stages):
    runtime = stages[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage sets USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) >= 10000 and (not gid or gid.isdigit()), users[-1]
    names = [name for name, _ in runtime.instructions]
    assert names.index("USER") > max(i for i, n in enumerate(names) if n == "RUN"), "USER after the last RUN"


def test_one_entry_point_per_service(stages):
    runtime = stages[-1]
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["python", "-m"]
    assert json.loads(runtime.all("CMD")[-1]) == ["services.web"]
    for service in k8s.SERVICES:
        assert (k8s.REPO / "services" / service / "__main__.py").is_file(), service


def test_each_deployment_names_its_service(rendered):
    for overlay in k8s.OVERLAYS:
        for deployment in k8s.of_kind(rendered[overlay], "Deployment"):
            spec = k8s.container(deployment)
            assert "command" not in spec, "the image's entry point is kept"
            assert spec["args"] == [f"services.{deployment['metadata']['name']}"], (overlay, spec["args"])


def test_dockerignore_admits_only_what_the_build_copies(stages):
    patterns = [line.strip() for line in (k8s.REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list: everything is ignored first"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {src.rstrip("/") for stage in stages for copy in stage.all("COPY")
              if not copy.startswith("--from=") for src in shlex.split(copy)[:-1]}
    assert admitted == copied, f"admitted {sorted(admitted)}, copied {sorted(copied)}"
    assert not admitted & {".data", ".venv", "gen", "tests", ".git"}


def _runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((k8s.REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]
            if canonicalize_name(Requirement(r).name) not in BUILD_ONLY_DEPENDENCIES]


def _closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the runtime requirements pull in (as installed in .venv)."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for text in importlib.metadata.requires(requirement.name) or []:
            child = Requirement(text)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if child.marker is None or any(child.marker.evaluate(env) for env in environments):
                todo.append((child, frozenset(child.extras)))
    return {key.partition("[")[0] for key in seen}


def test_the_image_dependencies_cover_what_the_services_import():
    closure = _closure(_runtime_requirements())
    pinned = {canonicalize_name(line.split("==")[0]) for line in (k8s.REPO / "requirements.lock").read_text().split()
              if "==" in line}
    assert closure <= pinned | {"setuptools", "pip"}, f"not pinned in requirements.lock: {closure - pinned}"
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for path in sorted((k8s.REPO / "services").rglob("*.py")):
        relative = path.relative_to(k8s.REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top in sys.stdlib_module_names or top in ("services", "confidant"):
                    continue
                if (relative, top) in DEVELOPMENT_ONLY_IMPORTS:
                    continue
                owners = {canonicalize_name(d) for d in distributions.get(top, [])}
                if not owners & closure:
                    missing.append(f"{relative}: {module} ({', '.join(sorted(owners)) or 'not installed'})")
    assert not missing, "imported but not among the image's dependencies:\n" + "\n".join(missing)


def test_hadolint_finds_nothing(tools_venv):
    result = k8s.run_tool("hadolint", "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_nothing_in_the_dockerfile(tools_venv, tmp_path):
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.read_text())
    failed = k8s.checkov(tmp_path, "dockerfile")
    assert not failed, [(f["check_id"], f["check_name"]) for f in failed]
