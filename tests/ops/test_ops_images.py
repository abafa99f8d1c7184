"""Dockerfiles (hadolint, layout), requirements.txt as the lock of pyproject.toml, .dockerignore."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

DOCKERFILES = ["Dockerfile.template", "database-service/Dockerfile", "websocket-streaming/Dockerfile"]
SERVICES = {
    "database-service": ("database_service", 5020),
    "websocket-streaming": ("websocket_streaming", 5021),
}
IGNORED = [
    "tests",
    "**/tests",
    "tools",
    ".env",
    "data",
    "node_modules",
    ".venv",
    "**/__pycache__",
    ".pytest_cache",
]


@pytest.mark.integration
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


@pytest.mark.unit
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


@pytest.mark.unit
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dependencies_are_a_layer_before_the_code(dockerfile: str, ops: SimpleNamespace) -> None:
    steps = ops.dockerfile_instructions(ops.REPO / dockerfile)
    copies = [i for i, (k, _) in enumerate(steps) if k == "COPY"]
    install = next(i for i, (k, arg) in enumerate(steps) if k == "RUN" and "pip install" in arg)
    assert "requirements.txt" in steps[copies[0]][1], "requirements.txt must be copied first"
    assert copies[0] < install < copies[1], "pip install must run between the two COPY steps"
    assert "-r /tmp/requirements.txt" in steps[install][1]


@pytest.mark.unit
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


@pytest.mark.unit
def test_service_dockerfiles_share_the_template_base(ops: SimpleNamespace) -> None:
    bases = {next(a for k, a in ops.dockerfile_instructions(ops.REPO / f) if k == "FROM") for f in DOCKERFILES}
    assert len(bases) == 1, bases


def _lock_module(repo: Path) -> ModuleType:
    """scripts/lock.py, imported (it is a script, not a package module)."""
    if "sardag_lock" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sardag_lock", repo / "scripts" / "lock.py")
        assert spec is not None
        assert spec.loader is not None
        sys.modules["sardag_lock"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["sardag_lock"]


@pytest.mark.unit
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_requirements_are_the_lock_of_pyproject(service: str, ops: SimpleNamespace) -> None:
    # exactly the closure of pyproject's base dependencies plus this service's extra, each
    # pinned inside every declared range (scripts/lock.py writes it; `make lock`)
    lock = _lock_module(ops.REPO)
    assert lock.problems(service, ops.REPO / service / "requirements.txt") == []


@pytest.mark.unit
def test_the_lock_follows_the_images_python_not_the_one_running_it(ops: SimpleNamespace) -> None:
    # redis needs async-timeout below Python 3.11.3 only: a Debian 3.11.2 running the check
    # must neither add it to a 3.11.14 image nor call the lock wrong
    lock = _lock_module(ops.REPO)
    image = lock.image_environment("database-service", ops.REPO)
    assert (
        image["python_full_version"]
        == re.search(
            r"^FROM python:(\d+\.\d+\.\d+)", (ops.REPO / "database-service/Dockerfile").read_text(), re.M
        )[1]
    )
    old = {**image, "python_full_version": "3.11.2"}
    needs = {str(req.name) for req in lock._requires("redis", set(), old)}
    assert "async-timeout" in needs
    assert "async-timeout" not in {str(req.name) for req in lock._requires("redis", set(), image)}


@pytest.mark.unit
def test_the_lock_check_passes_under_an_older_python(
    ops: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as on Debian's 3.11.2: the running interpreter's markers must not leak into the image's lock
    import packaging.markers

    real = packaging.markers.default_environment
    monkeypatch.setattr(
        packaging.markers, "default_environment", lambda: {**real(), "python_full_version": "3.11.2"}
    )
    lock = _lock_module(ops.REPO)
    for service in sorted(SERVICES):
        assert lock.problems(service, ops.REPO / service / "requirements.txt") == []


@pytest.mark.unit
def test_each_image_gets_only_its_own_service_dependencies(ops: SimpleNamespace) -> None:
    lock = _lock_module(ops.REPO)
    database = set(lock.read_pins(ops.REPO / "database-service" / "requirements.txt"))
    streaming = set(lock.read_pins(ops.REPO / "websocket-streaming" / "requirements.txt"))
    assert {"psycopg2-binary", "pydantic"} <= database - streaming
    assert {"websocket-client"} <= streaming - database
    # requests: the Binance REST client's, and the OTLP exporter's transport in both images
    assert "requests" in database & streaming
    assert "websockets" not in database | streaming  # the fake exchange runs in no image


@pytest.mark.unit
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
