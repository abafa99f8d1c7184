"""Fixtures for the shared library's tests: the support app on each limiter backend."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

sys.path.insert(0, str(Path(__file__).parent))

from sardag_testing.processes import SOURCE_PATH, Launcher, Running
from support_app import BASE_CONFIG, create_app

HERE = Path(__file__).parent


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Flask]:
    """Build the support app with config overrides (no `.env` is read from the cwd)."""

    def build(**overrides: Any) -> Flask:
        return create_app({**BASE_CONFIG, **overrides})

    return build


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.integration]),
    ]
)
def backend_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Config selecting one limiter backend: in-process, or the real Redis server."""
    if request.param == "memory":
        return {"REDIS_URL": None}
    return {"REDIS_URL": request.getfixturevalue("clean_redis")}


@pytest.fixture
def app(make_app: Callable[..., Flask], backend_config: dict[str, Any]) -> Flask:
    """The support app on the parametrised backend."""
    return make_app(**backend_config)


@pytest.fixture
def memory_app(make_app: Callable[..., Flask]) -> Iterator[Flask]:
    """The support app on the in-process backend only."""
    return make_app(REDIS_URL=None)


@pytest.fixture
def support_gunicorn(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start the support app under gunicorn with the shared hooks (tests/shared/gunicorn.conf.py).

    `start(workers, **env)` returns once /health answers (`wait=False`: at once); every server
    stops after the test.
    """
    with Launcher(tmp_path) as launch:

        def start(workers: int = 2, *, wait: bool = True, **env: str) -> Running:
            conf = HERE / "gunicorn.conf.py"
            paths = [*SOURCE_PATH, HERE]
            return launch.gunicorn_app(
                "support_app:create_app()",
                conf,
                workers,
                name="support-app",
                wait=wait,
                pythonpath=paths,
                **env,
            )

        yield start
