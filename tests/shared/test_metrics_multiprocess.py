"""Metrics under gunicorn with several workers: /metrics adds up every worker."""

from __future__ import annotations

import http.client
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import start_gunicorn, stop

from shared.testing import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(port: int, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("X-Worker-Pid", ""), response.read().decode()
    finally:
        connection.close()


def test_counts_from_every_worker_are_summed(tmp_path: Path) -> None:
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "RATE_LIMIT_ENABLED": "0"}
    server = start_gunicorn(port, env, workers=3)
    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            answers = list(pool.map(lambda i: _get(port, f"/slow/S{i % 50:02d}X"), range(300)))
        _, _, text = _get(port, "/metrics")
    finally:
        stop(server)
    assert len({pid for _, pid, _ in answers}) >= 2, "requests were not spread over workers"
    labels = r'method="GET",rule="/slow/<symbol>",service="support-app",status="200"'
    pattern = r"sardag_http_requests_total\{" + labels + r"\} (\S+)"
    assert [float(v) for v in re.findall(pattern, text)] == [300.0]
