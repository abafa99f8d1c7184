"""The real server: gunicorn with database-service/gunicorn.conf.py, then SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shared.metrics import FLUSH_SECONDS
from shared.testing import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]

SERVICE_DIR = Path(__file__).resolve().parents[1]


def _request(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_ready(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            if _request(f"{base}/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not become ready")


def test_gunicorn_serves_and_stops_gracefully(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "REDIS_URL", "BIND"}}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/sardag.db",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(SERVICE_DIR / "gunicorn.conf.py"),
            "database_service:create_app()",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        status, saved = _request(f"{base}/signals/save", {"symbol": "ETHUSDT", "action": "BUY", "price": 3000})
        assert status == 201
        assert _request(f"{base}/signals/{saved['id']}") == (200, saved)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_metrics_work_without_a_metrics_directory_set(tmp_path: Path) -> None:
    # `make run` sets no PROMETHEUS_MULTIPROC_DIR: gunicorn.conf.py picks a default after
    # the service (and prometheus_client) is imported; /metrics must still count requests.
    port = free_port()
    dropped = {"API_KEY", "REDIS_URL", "BIND", "PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path}/sardag.db",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        TMPDIR=str(tmp_path),  # the default directory goes under it
        LOG_LEVEL="WARNING",
    )
    conf = str(SERVICE_DIR / "gunicorn.conf.py")
    command = [sys.executable, "-m", "gunicorn", "-c", conf, "database_service:create_app()"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    labels = 'method="GET",rule="/health",service="database-service",status="200"'
    pattern = re.compile(r"sardag_http_requests_total\{" + labels + r"\} (\S+)")

    def health_count() -> float:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            found = pattern.search(response.read().decode())
        return float(found[1]) if found else 0.0

    try:
        _wait_ready(base, process)
        for _ in range(5):
            assert _request(f"{base}/health")[0] == 200
        # five here and at least one from _wait_ready, summed over both workers
        wait_until(lambda: health_count() >= 6, 3 * FLUSH_SECONDS, "/health requests in /metrics")
        assert list((tmp_path / "sardag-metrics-database-service").glob("*.db"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
