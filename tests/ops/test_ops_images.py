"""Dockerfiles (hadolint, layout), requirements.txt vs pyproject.toml, .dockerignore."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

DOCKERFILES = ["Dockerfile.template", "database-service/Dockerfile", "websocket-streaming/Dockerfile"]
SERVICES = {
    "database-service": ("database_service", 5020),
    "websocket-streaming": ("websocket_streaming", 5021),
}
IGNORED = ["tests", "**/tests", ".env", "data", "node_modules", ".venv", "**/__pycache__", ".pytest_cache"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_reports_no_error(dockerfile: str, ops: SimpleNamespace) -> None:
    hadolint = ops.find_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--format", "json", str(ops.REPO / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    errors = [f for f in findings if f["level"] == "error"]
    assert not errors, errors
    assert result.returncode in (0, 1), result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_shape(dockerfile: str, ops: SimpleNamespace) -> None:
    steps = ops.dockerfile_instructions(ops.REPO / dockerfile)
    kinds = [k for k, _ in steps]
    base = next(arg for k, arg in steps if k == "FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", base), base
    user = [arg for k, arg in steps if k == "USER"]
    assert user, "no USER"
    assert user[-1].split(":")[0] not in {"root", "0"}
    assert "HEALTHCHECK" in kinds
    assert "EXPOSE" in kinds
    cmd = next(arg for k, arg in reversed(steps) if k == "CMD")
    assert "gunicorn" in cmd
    assert "gunicorn.conf.py" in cmd
    assert "create_app()" in cmd


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dependencies_are_a_layer_before_the_code(dockerfile: str, ops: SimpleNamespace) -> None:
    steps = ops.dockerfile_instructions(ops.REPO / dockerfile)
    copies = [i for i, (k, _) in enumerate(steps) if k == "COPY"]
    install = next(i for i, (k, arg) in enumerate(steps) if k == "RUN" and "pip install" in arg)
    assert "requirements.txt" in steps[copies[0]][1], "requirements.txt must be copied first"
    assert copies[0] < install < copies[1], "pip install must run between the two COPY steps"
    assert "-r /tmp/requirements.txt" in steps[install][1]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_dockerfile_matches_its_service(service: str, ops: SimpleNamespace) -> None:
    package, port = SERVICES[service]
    steps = ops.dockerfile_instructions(ops.REPO / service / "Dockerfile")
    assert ("EXPOSE", str(port)) in steps
    cmd = next(arg for k, arg in reversed(steps) if k == "CMD")
    assert json.loads(cmd) == ["gunicorn", "-c", f"{service}/gunicorn.conf.py", f"{package}:create_app()"]
    for _, arg in (s for s in steps if s[0] == "COPY"):
        source = arg.split()[0]
        assert (ops.REPO / source).exists(), f"COPY source {source} does not exist"


def test_service_dockerfiles_share_the_template_base(ops: SimpleNamespace) -> None:
    bases = {next(a for k, a in ops.dockerfile_instructions(ops.REPO / f) if k == "FROM") for f in DOCKERFILES}
    assert len(bases) == 1, bases


def _pins(path: Path) -> dict[str, Requirement]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement
    return pins


def _runtime_dependencies(repo: Path) -> dict[str, Requirement]:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_requirements_pinned_within_pyproject_ranges(service: str, ops: SimpleNamespace) -> None:
    pins = _pins(ops.REPO / service / "requirements.txt")
    wanted = _runtime_dependencies(ops.REPO)
    for name, pin in pins.items():
        specs = list(pin.specifier)
        assert len(specs) == 1, f"{name}: pin exactly one version"
        assert specs[0].operator == "==", f"{name}: {pin} is not pinned with =="
        if name in wanted:
            assert wanted[name].specifier.contains(specs[0].version), f"{pin} outside {wanted[name]}"
            assert pin.extras == wanted[name].extras, f"{name}: extras differ from pyproject.toml"
    missing = sorted(set(wanted) - set(pins))
    assert not missing, f"{service}/requirements.txt lacks {missing}"


def test_dockerignore_keeps_local_state_out(ops: SimpleNamespace) -> None:
    lines = {
        line.strip()
        for line in (ops.REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in IGNORED:
        assert pattern in lines, f".dockerignore lacks {pattern}"
    for needed in ("shared", "database-service", "websocket-streaming", "requirements.txt"):
        assert needed not in lines, f".dockerignore would drop {needed}"
