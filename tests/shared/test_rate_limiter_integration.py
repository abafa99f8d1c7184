"""The limiter across real processes and through a Redis outage."""

from __future__ import annotations

import http.client
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))

from servers import redis_server_binary, start_gunicorn, start_redis, stop
from support_app import BASE_CONFIG

from shared.rate_limiter import get_limiter
from shared.testing import free_port, require_server, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.redis]


def _get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Worker-Pid", "")
    finally:
        connection.close()


@pytest.mark.slow
def test_limit_is_exact_across_gunicorn_workers(clean_redis: str) -> None:
    port = free_port()
    server = start_gunicorn(port, {"REDIS_URL": clean_redis}, workers=3)
    try:
        # /health answers once one worker is up; the burst must wait for the others to boot
        wait_until(lambda: _workers_answering(port) >= 2, 60, "a second worker to answer")
        with ThreadPoolExecutor(max_workers=48) as pool:
            answers = list(pool.map(lambda _: _get(port, "/hundred"), range(400)))
    finally:
        stop(server)
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: 100, 429: 300}
    assert len({pid for _, pid in answers}) >= 2, "the requests were not spread over workers"


def _workers_answering(port: int) -> int:
    with ThreadPoolExecutor(max_workers=12) as pool:
        return len({pid for _, pid in pool.map(lambda _: _get(port, "/health"), range(24))})


@pytest.fixture
def private_redis() -> Iterator[int]:
    """A redis-server of this test's own, which the test may stop and restart."""
    if redis_server_binary() is None:
        require_server("redis-server binary", "not installed")
    port = free_port()
    process = start_redis(port)
    holder = {"process": process}
    yield port
    stop(holder["process"])


def _zcard(port: int) -> int:
    client = redis.Redis(port=port)
    return sum(client.zcard(key) for key in client.scan_iter("sardag:rl:*"))


def test_redis_outage_fails_open_then_recovers(private_redis: int) -> None:
    from support_app import create_app

    port = private_redis
    app = create_app({**BASE_CONFIG, "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    client = app.test_client()
    assert [client.get("/limited").status_code for _ in range(10)] == [200] * 10
    assert _zcard(port) == 10  # decided on Redis

    redis.Redis(port=port).shutdown(nosave=True)
    # served, and still limited: in-process, from an empty window (fail open)
    assert [client.get("/limited").status_code for _ in range(51)] == [200] * 50 + [429]
    health = client.get("/health")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    assert health.get_json()["checks"]["rate_limiter_redis"]["status"] == "degraded"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'sardag_redis_fallback_total{component="rate_limiter",service="support-app"} 51.0' in metrics

    restarted = start_redis(port)
    try:
        get_limiter(app).backend.breaker.reset_seconds = 0.0  # type: ignore[union-attr]
        assert client.get("/hundred").status_code == 200
        assert _zcard(port) == 1  # back on Redis: the new server holds the window
        assert client.get("/health").get_json()["status"] == "healthy"
    finally:
        stop(restarted)


def test_unreachable_redis_at_start_serves_in_process() -> None:
    from support_app import create_app

    app = create_app({**BASE_CONFIG, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    client = app.test_client()
    assert [client.get("/limited").status_code for _ in range(51)] == [200] * 50 + [429]
    assert client.get("/health").get_json()["status"] == "degraded"
