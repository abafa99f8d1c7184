"""Metrics under gunicorn with several workers: /metrics adds up every worker."""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sardag_testing import wait_until
from sardag_testing.processes import Running

from shared.metrics import FLUSH_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(port: int, path: str) -> tuple[int, str, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("X-Worker-Pid", ""), response.read().decode()
    finally:
        connection.close()


def _counted(port: int) -> list[float]:
    _, _, text = _get(port, "/metrics")
    labels = r'method="GET",rule="/slow/<symbol>",service="support-app",status="200"'
    return [float(v) for v in re.findall(r"sardag_http_requests_total\{" + labels + r"\} (\S+)", text)]


def test_counts_from_every_worker_are_summed(support_gunicorn: Callable[..., Running]) -> None:
    port = support_gunicorn(3, RATE_LIMIT_ENABLED="0", GUNICORN_THREADS="8").port
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda i: _get(port, f"/slow/S{i % 50:02d}X"), range(300)))
    # Each worker records its counts within FLUSH_SECONDS (the worker answering the scrape
    # at once); give the others ten intervals on a loaded machine.
    assert len({pid for _, pid, _ in answers}) >= 2, "requests were not spread over workers"
    wait_until(lambda: _counted(port) == [300.0], 10 * FLUSH_SECONDS, "300 requests counted once")
