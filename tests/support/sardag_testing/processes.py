"""Processes a test starts: an app under gunicorn (waited for on /health), the fake exchange.

    with Launcher(tmp_path) as launch:
        db = launch.gunicorn("database-service", workers=2, REDIS_URL=url)
        status, body = http("GET", f"{db.url}/health")
        app = launch.gunicorn_app("support_app:create_app()", conf, pythonpath=[tests_dir])

Every process gets its own log file (printed in failure messages) and its own session, so a
stop reaches its whole process tree.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sardag_testing import free_port, wait_until

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
SERVICES: dict[str, dict[str, Any]] = {
    "database-service": {"module": "database_service", "port": 5020},
    "websocket-streaming": {"module": "websocket_streaming", "port": 5021},
}


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


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


SOURCE_PATH = [REPO, REPO / "database-service", REPO / "websocket-streaming"]
FAKE_EXCHANGE_PATH = [REPO / "tools" / "fake-exchange"]  # a tool: on no service's path
SUPPORT_PATH = REPO / "tests" / "support"  # where sardag_testing lives, for a test's own subprocess


def service_env(
    tmp: Path, *, bin_dir: Path = VENV_BIN, pythonpath: Iterable[Path] = SOURCE_PATH, **extra: str
) -> dict[str, str]:
    """A clean environment for a service: `bin_dir` on PATH, `pythonpath` importable, no stray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMETHEUS_", "WEB_CONC", "PYTHONPATH"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath),
        PYTHONUNBUFFERED="1",
        BIND="127.0.0.1",
        LOG_LEVEL="WARNING",
        SENTRY_DSN="",
        REDIS_URL="",
        DATABASE_URL=f"sqlite:///{tmp / 'sardag.db'}",
    )
    env.update(extra)
    return env


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
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_messages(self) -> list[str]:
        """Every line printed so far, JSON log lines reduced to their `message`."""
        return [_message(line) for line in self.log_text().splitlines()]

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines the process printed."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        """Send `signum` to the process (not its children)."""
        self.process.send_signal(signum)

    def children(self) -> list[int]:
        """Pids of the process's live children (a gunicorn master's workers), sorted."""
        return child_pids(self.process.pid)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL the process group; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return int(self.process.returncode)


class Launcher:
    """Starts processes for one test and stops every one of them afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Running] = []

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self, name: str, argv: list[str], env: dict[str, str], port: int = 0, cwd: Path = REPO
    ) -> Running:
        """Start `argv` in its own session with output to `<tmp>/<name>.log`."""
        log = self.tmp / f"{name}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        running = Running(name, process, log, port, env)
        self.running.append(running)
        return running

    def gunicorn(self, service: str, workers: int = 2, *, app: str | None = None, **options: Any) -> Running:
        """Start `service` under gunicorn with its gunicorn.conf.py (options: see `gunicorn_app`).

        `app` replaces the service's app spec (`module:create_app()`).
        """
        conf = REPO / service / "gunicorn.conf.py"
        return self.gunicorn_app(app or app_spec(service), conf, workers, name=service, **options)

    def gunicorn_app(
        self,
        spec: str,
        conf: Path,
        workers: int = 2,
        *,
        name: str = "app",
        wait: bool = True,
        port: int | None = None,
        bin_dir: Path = VENV_BIN,
        pythonpath: Iterable[Path] = SOURCE_PATH,
        cwd: Path = REPO,
        metrics_dir: bool = True,
        prefix: Sequence[str] = (),
        **env: str,
    ) -> Running:
        """Start `spec` under gunicorn with `conf` on a free loopback port; wait for /health.

        `bin_dir` is where gunicorn is (another venv: an installed wheel), `pythonpath` what
        it may import besides that venv, `metrics_dir=False` leaves PROMETHEUS_MULTIPROC_DIR
        unset (the config's default applies), `prefix` is a command gunicorn runs under, one
        that execs it (e.g. `setpriv ... --`), `env` overrides the service's settings.
        """
        port = port or free_port()
        extra = {"PORT": str(port), "WEB_CONCURRENCY": str(workers)}
        if metrics_dir:
            extra["PROMETHEUS_MULTIPROC_DIR"] = str(self.tmp / f"metrics-{name}-{port}")
        full_env = service_env(self.tmp, bin_dir=bin_dir, pythonpath=pythonpath, **{**extra, **env})
        argv = [*prefix, str(bin_dir / "gunicorn"), "-c", str(conf), spec]
        running = self.start(f"{name}-{port}", argv, full_env, port, cwd)
        if wait:
            self.wait_healthy(running)
        return running

    def fake_exchange(self, *args: str) -> Running:
        """The fake Binance exchange (tools/fake-exchange) on a free loopback port (extra CLI `args`)."""
        port = free_port()
        argv = [sys.executable, "-m", "fake_exchange", "--port", str(port), *args]
        env = service_env(self.tmp, pythonpath=FAKE_EXCHANGE_PATH)
        running = self.start(f"fake-exchange-{port}", argv, env, port)

        def ready() -> bool:  # it prints its URLs once it listens; tests read them from the log
            printed = re.search(r"BINANCE_REST_URL=\S+\n", running.log_text())  # the whole line
            return running.process.poll() is not None or printed is not None

        wait_until(ready, 20, "fake exchange")
        if running.process.poll() is not None:
            pytest.fail(f"fake exchange exited:\n{running.log_tail()}")
        return running

    def wait_healthy(self, running: Running, timeout: float = 40.0, statuses: tuple[int, ...] = (200,)) -> None:
        """Wait until `<url>/health` answers one of `statuses`; fail if the process exits."""

        def ready() -> bool:
            return running.process.poll() is not None or answers(f"{running.url}/health", statuses)

        wait_until(ready, timeout, f"{running.name} /health")
        if running.process.poll() is not None:
            pytest.fail(f"{running.name} exited with {running.process.returncode}:\n{running.log_tail()}")

    def stop_all(self) -> None:
        """Stop every process, newest first."""
        for running in reversed(self.running):
            running.stop(timeout=15)


def _message(line: str) -> str:
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return line
        if isinstance(entry, dict) and "message" in entry:
            return str(entry["message"])
    return line


def child_pids(pid: int) -> list[int]:
    """Pids of the live children of `pid` (Linux /proc), sorted."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return sorted(set(found))


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ProcessLookupError(pid)


def app_spec(service: str) -> str:
    """`database_service:create_app()` for `database-service`."""
    return f"{SERVICES[service]['module']}:create_app()"
