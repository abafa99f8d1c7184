"""The GitHub Actions workflow: actionlint (with shellcheck on the `run:` scripts) accepts it,
and it does what `.ci/run` does, with PostgreSQL and Redis as service containers."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest

WORKFLOW = ".github/workflows/ci.yml"


def actionlint(ops: SimpleNamespace, *paths: Path) -> subprocess.CompletedProcess[str]:
    """Run actionlint with shellcheck on PATH (both from the `test` extra)."""
    binary = ops.find_tool("actionlint")
    ops.find_tool("shellcheck")
    env = {**os.environ, "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [binary, "-no-color", "-verbose", *map(str, paths)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, cwd=ops.REPO, env=env)


@pytest.fixture(scope="module")
def workflow(ops: SimpleNamespace) -> dict[str, Any]:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load((ops.REPO / WORKFLOW).read_text())


@pytest.mark.integration
def test_actionlint_accepts_every_workflow(ops: SimpleNamespace) -> None:
    paths = sorted((ops.REPO / ".github/workflows").glob("*.yml"))
    assert paths, "no workflow"
    result = actionlint(ops, *paths)
    print(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Found total 0 errors" in result.stderr


@pytest.mark.integration
def test_actionlint_finds_a_script_injection(ops: SimpleNamespace, tmp_path: Path) -> None:
    """The check above can fail: a workflow with an untrusted expression in `run:` does."""
    broken = tmp_path / ".github/workflows/broken.yml"
    broken.parent.mkdir(parents=True)
    text = (ops.REPO / WORKFLOW).read_text()
    broken.write_text(text.replace("run: make lint", 'run: echo "${{ github.event.pull_request.title }}"'))
    result = actionlint(ops, broken)
    assert result.returncode == 1
    assert "github.event.pull_request.title" in result.stdout


@pytest.mark.unit
def test_tests_job_runs_ci_run_against_service_containers(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["test"]
    commands = [step.get("run", "") for step in job["steps"]]
    assert any(re.fullmatch(r"(bash )?\.ci/run", command.strip()) for command in commands), commands
    services = job["services"]
    assert re.fullmatch(r"timescale/timescaledb:\d+\.\d+\.\d+-pg\d+", services["postgres"]["image"])
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+(-alpine)?", services["redis"]["image"])
    assert "--health-cmd" in services["postgres"]["options"]
    assert "--health-cmd" in services["redis"]["options"]
    for variable, service in (("TEST_DATABASE_URL", "postgres"), ("TEST_REDIS_URL", "redis")):
        port = urlsplit(job["env"][variable]).port
        assert f"{port}:{port}" in [str(p) for p in services[service]["ports"]], variable


@pytest.mark.unit
def test_lint_job_runs_make_lint(workflow: dict[str, Any], ops: SimpleNamespace) -> None:
    commands = [step.get("run", "").strip() for step in workflow["jobs"]["lint"]["steps"]]
    assert "make lint" in commands
    assert re.search(r"^lint:", (ops.REPO / "Makefile").read_text(), re.MULTILINE)


@pytest.mark.unit
def test_python_version_is_the_projects_minimum(workflow: dict[str, Any], ops: SimpleNamespace) -> None:
    import tomllib

    minimum = tomllib.loads((ops.REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    versions = {
        step["with"]["python-version"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/setup-python@")
    }
    assert versions == {minimum.removeprefix(">=")}
