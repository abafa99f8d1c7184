"""The real server: gunicorn with database-service/gunicorn.conf.py, then SIGTERM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sardag_testing import wait_until
from sardag_testing.processes import Launcher, http

from shared.metrics import FLUSH_SECONDS

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]


def test_gunicorn_serves_and_stops_gracefully(tmp_path: Path) -> None:
    with Launcher(tmp_path) as launch:
        server = launch.gunicorn("database-service", workers=2)
        status, saved = http(
            "POST", f"{server.url}/signals/save", {"symbol": "ETHUSDT", "action": "BUY", "price": 3000}
        )
        assert status == 201
        assert http("GET", f"{server.url}/signals/{saved['id']}") == (200, saved)
        assert server.stop(timeout=30) == 0, server.log_tail()
    # a clean start and stop warns of nothing: a false ERROR at every start (gunicorn's
    # nworkers_changed during arbiter setup) would train operators to ignore errors
    levels = [json.loads(line) for line in server.log_text().splitlines()]
    assert [e for e in levels if e.get("level") in ("WARNING", "ERROR", "CRITICAL")] == []


def test_metrics_work_without_a_metrics_directory_set(tmp_path: Path) -> None:
    # `make run` sets no PROMETHEUS_MULTIPROC_DIR: gunicorn.conf.py picks a default after
    # the service (and prometheus_client) is imported; /metrics must still count requests.
    labels = 'method="GET",rule="/health",service="database-service",status="200"'
    pattern = re.compile(r"sardag_http_requests_total\{" + labels + r"\} (\S+)")
    with Launcher(tmp_path) as launch:
        # TMPDIR: the default directory goes under it
        server = launch.gunicorn("database-service", workers=2, metrics_dir=False, TMPDIR=str(tmp_path))

        def health_count() -> float:
            found = pattern.search(http("GET", f"{server.url}/metrics")[1])
            return float(found[1]) if found else 0.0

        for _ in range(5):
            assert http("GET", f"{server.url}/health")[0] == 200
        # five here and at least one from the launcher's wait, summed over both workers
        wait_until(lambda: health_count() >= 6, 10 * FLUSH_SECONDS, "/health requests in /metrics")
        (private,) = tmp_path.glob("sardag-metrics-database-service-*")  # mkdtemp's: unpredictable, 0700
        assert private.stat().st_mode & 0o777 == 0o700
        assert list(private.glob("*.db"))
