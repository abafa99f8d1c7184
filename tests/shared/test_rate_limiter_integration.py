"""The limiter across real processes and through a Redis outage."""

from __future__ import annotations

import http.client
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sardag_testing import free_port, wait_until
from sardag_testing.processes import Running
from sardag_testing.servers import PrivateRedis
from support_app import BASE_CONFIG

from shared.rate_limiter import get_limiter

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
def test_limit_is_exact_across_gunicorn_workers(
    clean_redis: str, support_gunicorn: Callable[..., Running]
) -> None:
    server = support_gunicorn(3, REDIS_URL=clean_redis, REDIS_TIMEOUT_SECONDS="1", GUNICORN_THREADS="8")
    # /health answers once one worker is up; the burst must wait for the others to boot
    wait_until(lambda: _workers_answering(server.port) >= 2, 60, "a second worker to answer")
    with ThreadPoolExecutor(max_workers=48) as pool:
        answers = list(pool.map(lambda _: _get(server.port, "/hundred"), range(400)))
    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: 100, 429: 300}
    assert len({pid for _, pid in answers}) >= 2, "the requests were not spread over workers"


def _workers_answering(port: int) -> int:
    with ThreadPoolExecutor(max_workers=12) as pool:
        return len({pid for _, pid in pool.map(lambda _: _get(port, "/health"), range(24))})


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which the test may stop and restart."""
    with PrivateRedis() as server:
        yield server


def _zcard(port: int) -> int:
    client = redis.Redis(port=port)
    return sum(client.zcard(key) for key in client.scan_iter("sardag:rl:*"))


@pytest.mark.slow
def test_redis_outage_fails_open_then_recovers(private_redis: PrivateRedis) -> None:
    from support_app import create_app

    port = private_redis.port
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

    private_redis.start()
    get_limiter(app).backend.breaker.reset_seconds = 0.0  # type: ignore[union-attr]
    assert client.get("/hundred").status_code == 200
    assert _zcard(port) == 1  # back on Redis: the new server holds the window
    assert client.get("/health").get_json()["status"] == "healthy"


def test_unreachable_redis_at_start_serves_in_process() -> None:
    from support_app import create_app

    app = create_app({**BASE_CONFIG, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    client = app.test_client()
    assert [client.get("/limited").status_code for _ in range(51)] == [200] * 50 + [429]
    assert client.get("/health").get_json()["status"] == "degraded"
