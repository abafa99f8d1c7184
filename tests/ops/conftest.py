"""Fixtures for the operations tests: tool lookup, free ports, services under gunicorn."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.testing import free_port, in_ci, wait_until

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
INSTALL_HINT = "run scripts/install-tools.sh (as root) to install it"

SERVICES: dict[str, dict[str, Any]] = {
    "database-service": {"module": "database_service", "port": 5020},
    "websocket-streaming": {"module": "websocket_streaming", "port": 5021},
}


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


def http(
    method: str, url: str, body: Any = None, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON or text). Raises OSError when unanswered."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _decode(response.read(), response.headers.get_content_type())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read(), exc.headers.get_content_type())


def _decode(raw: bytes, content_type: str) -> Any:
    if content_type == "application/json":
        return json.loads(raw or b"null")
    return raw.decode("utf-8", "replace")


def answers(url: str, statuses: tuple[int, ...] = (200,)) -> bool:
    """True when `url` answers with one of `statuses`."""
    try:
        status, _ = http("GET", url, timeout=2)
    except OSError:
        return False
    return status in statuses


@dataclass
class Running:
    """A process started by a test, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a service: venv on PATH, repo importable, no stray .env values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS_", "WEB_CONC"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(
            [str(REPO), str(REPO / "database-service"), str(REPO / "websocket-streaming")]
        ),
        PYTHONUNBUFFERED="1",
        BIND="127.0.0.1",
        LOG_LEVEL="WARNING",
        SENTRY_DSN="",
        REDIS_URL="",
        DATABASE_URL=f"sqlite:///{tmp / 'sardag.db'}",
    )
    env.update(extra)
    return env


class Launcher:
    """Starts processes for one test and stops every one of them afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Running] = []

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int = 0) -> Running:
        log = self.tmp / f"{name}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        running = Running(name, process, log, port, env)
        self.running.append(running)
        return running

    def gunicorn(self, service: str, workers: int = 2, **env: str) -> Running:
        """Start `service` under gunicorn with its gunicorn.conf.py on a free loopback port."""
        spec = SERVICES[service]
        port = free_port()
        full_env = base_env(
            self.tmp,
            PORT=str(port),
            WEB_CONCURRENCY=str(workers),
            PROMETHEUS_MULTIPROC_DIR=str(self.tmp / f"metrics-{service}-{port}"),
            **env,
        )
        argv = [
            str(VENV_BIN / "gunicorn"),
            "-c",
            f"{service}/gunicorn.conf.py",
            f"{spec['module']}:create_app()",
        ]
        running = self.start(f"{service}-{port}", argv, full_env, port)
        self.wait_healthy(running)
        return running

    def fake_exchange(self) -> Running:
        """The streaming engineer's fake Binance exchange on a free loopback port."""
        port = free_port()
        argv = [sys.executable, "-m", "websocket_streaming.fake_exchange", "--port", str(port)]
        running = self.start(f"fake-exchange-{port}", argv, base_env(self.tmp), port)
        wait_until(lambda: _listening(port) or running.process.poll() is not None, 20, "fake exchange")
        if running.process.poll() is not None:
            pytest.fail(f"fake exchange exited:\n{running.log_tail()}")
        return running

    def wait_healthy(self, running: Running, timeout: float = 40.0) -> None:
        def ready() -> bool:
            return running.process.poll() is not None or answers(f"{running.url}/health")

        wait_until(ready, timeout, f"{running.name} /health")
        if running.process.poll() is not None:
            pytest.fail(f"{running.name} exited with {running.process.returncode}:\n{running.log_tail()}")

    def stop_all(self) -> None:
        for running in reversed(self.running):
            running.stop(timeout=15)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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
        base_env=base_env,
        dockerfile_instructions=dockerfile_instructions,
        find_tool=find_tool,
        free_port=free_port,
        http=http,
        in_ci=in_ci,
        missing=missing,
        require_service_code=require_service_code,
        wait_until=wait_until,
    )
