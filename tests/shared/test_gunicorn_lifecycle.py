"""The shared gunicorn settings: a clean start, request, SIGTERM and exit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import wait_for_http

from shared.testing import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).parent


def test_start_serve_and_sigterm_leave_a_clean_log(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from shared.gunicorn_hooks import configure\nconfigure(globals(), 'support-app')\n")
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "LOG_LEVEL": "INFO",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "m"),
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(conf),
        "--pythonpath",
        str(HERE),
        "support_app:create_app()",
    ]
    server = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health")
        for n in range(20):
            call = urllib.request.Request(f"http://127.0.0.1:{port}/plain", headers={"X-Request-ID": f"r-{n}"})
            with urllib.request.urlopen(call, timeout=5) as response:
                assert response.status == 200
    finally:
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0
    assert "Logging error" not in stderr
    assert "Traceback" not in stderr
    # one JSON access line per request, written by the worker's log writer by the time it exits
    access = [json.loads(line) for line in stderr.splitlines() if '"message": "request"' in line]
    assert sorted(e["request_id"] for e in access if e["path"] == "/plain") == sorted(
        f"r-{n}" for n in range(20)
    )
    assert "Shutting down: Master" in stderr
