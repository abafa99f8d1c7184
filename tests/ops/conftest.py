"""Fixtures for the operations tests: tool lookup, free ports, services under gunicorn."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.testing import free_port, in_ci, wait_until
from shared.testing.processes import REPO, SERVICES, VENV_BIN, Launcher, answers, http, service_env

INSTALL_HINT = "run scripts/install-tools.sh (as root) to install it"


def missing(reason: str) -> None:
    """Skip with `reason`, or fail under CI=true."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def find_tool(name: str, *extra: Path) -> str:
    """Path of an executable on PATH, next to this Python, or in `extra`; else skip/fail."""
    candidates = [shutil.which(name), VENV_BIN / name, *extra]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return str(candidate)
    missing(f"{name} not found; {INSTALL_HINT}")
    raise AssertionError("unreachable")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def require_service_code() -> None:
    """Skip (fail under CI) while a service package or its gunicorn.conf.py is not there."""
    for service, spec in SERVICES.items():
        for path in (REPO / service / "gunicorn.conf.py", REPO / service / spec["module"] / "__init__.py"):
            if not path.exists():
                missing(f"{path.relative_to(REPO)} does not exist yet")


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    require_service_code()
    started = Launcher(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def ops() -> SimpleNamespace:
    """The helpers above, for test modules (importlib import mode: no conftest imports)."""
    return SimpleNamespace(
        REPO=REPO,
        SERVICES=SERVICES,
        answers=answers,
        base_env=service_env,
        dockerfile_instructions=dockerfile_instructions,
        find_tool=find_tool,
        free_port=free_port,
        http=http,
        in_ci=in_ci,
        missing=missing,
        require_service_code=require_service_code,
        wait_until=wait_until,
    )
