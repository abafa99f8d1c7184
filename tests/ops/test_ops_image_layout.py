"""Each image's file layout, ENV, CMD and HEALTHCHECK, exercised without a Docker engine.

The files each Dockerfile COPYs are copied to a temporary /app stand-in, its ENV is applied
(paths under /app and /tmp mapped into the temporary directory) and its CMD runs there with
the project's Python environment. What this cannot cover: the base image, pip installing
requirements.txt inside it, the non-root user's file permissions, and Docker networking.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]


class Image:
    """The parts of a Dockerfile this test needs."""

    def __init__(self, steps: list[tuple[str, str]]) -> None:
        self.workdir = next(arg for kind, arg in steps if kind == "WORKDIR")
        self.copies = [arg.split() for kind, arg in steps if kind == "COPY"]
        self.env: dict[str, str] = {}
        for kind, arg in steps:
            if kind == "ENV":
                self.env.update(item.split("=", 1) for item in arg.split())
        self.cmd: list[str] = json.loads(next(arg for kind, arg in reversed(steps) if kind == "CMD"))
        health = next(arg for kind, arg in steps if kind == "HEALTHCHECK")
        self.healthcheck: list[str] = json.loads(health.split(" CMD ", 1)[1])


def _build_root(repo: Path, image: Image, root: Path) -> Path:
    """Copy what the Dockerfile copies into root/app (its WORKDIR) and make app/data."""
    app = root / image.workdir.lstrip("/")
    for source, destination in image.copies:
        if destination.startswith("/"):
            continue  # /tmp/requirements.txt: only used by pip inside the image
        target = app / destination
        if (repo / source).is_dir():
            shutil.copytree(repo / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / source, target)
    (app / "data").mkdir()
    return app


def _image_env(image: Image, root: Path, port: int, **extra: str) -> dict[str, str]:
    env = {key: value.replace("/app", str(root / "app")) for key, value in image.env.items()}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(root / "tmp" / "sardag-metrics")
    env.update(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", HOME=str(root), PORT=str(port))
    env.update(extra)
    return env


def _run(
    argv: list[str], app: Path, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=app, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("service", ["database-service", "websocket-streaming"])
def test_image_layout_runs_cmd_and_healthcheck(
    service: str, ops: SimpleNamespace, launcher: Any, tmp_path: Path
) -> None:
    image = Image(ops.dockerfile_instructions(ops.REPO / service / "Dockerfile"))
    app = _build_root(ops.REPO, image, tmp_path)
    port = ops.free_port()
    extra = {}
    if service == "websocket-streaming":
        exchange = launcher.fake_exchange()
        urls = re.search(r"BINANCE_WS_URL=(\S+) BINANCE_REST_URL=(\S+)", exchange.log_tail())
        assert urls, exchange.log_tail()
        extra = {"BINANCE_WS_URL": urls[1], "BINANCE_REST_URL": urls[2]}
    env = _image_env(image, tmp_path, port, **extra)
    package = image.cmd[-1].split(":")[0]

    where = _run(
        [sys.executable, "-c", f"import {package}, shared; print({package}.__file__, shared.__file__)"],
        app,
        env,
    )
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(app)) for path in where.stdout.split()), where.stdout

    refused = _run(image.cmd, app, env)
    assert refused.returncode == 2, "BIND=0.0.0.0 without API_KEY must refuse to start"
    assert "BIND" in refused.stderr

    server = launcher.start(f"{service}-image", image.cmd, {**env, "API_KEY": "ops-test-key-0123456789"}, port)
    launcher.wait_healthy(server)
    health = _run(image.healthcheck, app, env, timeout=10)
    assert health.returncode == 0, health.stderr
    assert server.stop(timeout=40) == 0, server.log_tail()
    assert _run(image.healthcheck, app, env, timeout=10).returncode != 0, "HEALTHCHECK passes with no server"
