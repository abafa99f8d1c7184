"""/livez and /readyz: liveness never follows a dependency; readiness is a fresh price."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from fake_exchange import FakeExchange, trade_event
from flask import Flask
from sardag_testing import wait_until
from sardag_testing.servers import PrivateRedis
from websocket_streaming import get_service


@pytest.mark.unit
@pytest.mark.slow
@pytest.mark.websocket
def test_ready_only_with_a_fresh_price(fake: FakeExchange, make_app: Callable[..., Flask]) -> None:
    app = make_app(PRICE_STALE_SECONDS=0.5)
    client = app.test_client()
    before = client.get("/readyz")
    assert before.status_code == 503  # connected, but no price yet
    assert before.get_json()["checks"]["price"] == {
        "status": "down",
        "detail": {"newest_price_age_seconds": None},
    }
    assert before.headers["Retry-After"] == "5"
    assert client.get("/livez").status_code == 200
    fake.send(trade_event("BTCUSDT", "100.5", 1), stream="btcusdt@trade")
    wait_until(lambda: client.get("/readyz").status_code == 200, what="ready after the first price")
    assert client.get("/readyz").get_json()["status"] == "ready"
    time.sleep(0.65)  # the feed goes silent past PRICE_STALE_SECONDS
    assert client.get("/readyz").status_code == 503
    assert client.get("/livez").get_json() == {"status": "alive", "service": "websocket-streaming"}


@pytest.mark.unit
@pytest.mark.websocket
def test_probes_are_not_rate_limited(fake: FakeExchange, make_app: Callable[..., Flask]) -> None:
    client = make_app(RATE_LIMIT_DEFAULT=2).test_client()
    assert [client.get("/symbols").status_code for _ in range(3)] == [200, 200, 429]
    assert {client.get("/livez").status_code for _ in range(20)} == {200}
    assert {client.get("/readyz").status_code for _ in range(20)} == {503}  # answered, never 429


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own: the test kills it."""
    with PrivateRedis() as server:
        yield server


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.redis
def test_alive_while_redis_is_down(
    fake: FakeExchange, make_app: Callable[..., Flask], private_redis: PrivateRedis
) -> None:
    app = make_app(REDIS_URL=private_redis.url, WS_LEADER_LOCK_TTL_SECONDS=0.6, PRICE_STALE_SECONDS=30.0)
    wait_until(lambda: get_service(app).role == "leader", what="leadership")
    wait_until(lambda: fake.open_connections() >= 1, what="upstream connection")
    fake.send(trade_event("BTCUSDT", "100.5", 1), stream="btcusdt@trade")
    client = app.test_client()
    wait_until(lambda: client.get("/readyz").status_code == 200, what="ready")
    private_redis.stop()
    for _ in range(20):  # while Redis stays down, liveness stays 200
        assert client.get("/livez").status_code == 200
        time.sleep(0.1)
    assert client.get("/health").get_json()["checks"]["upstream"]["detail"]["redis"] == "unreachable"


@pytest.mark.unit
@pytest.mark.slow
@pytest.mark.websocket
def test_subscriber_gauge_follows_open_streams(
    make_app: Callable[..., Flask], serve: Callable[[Flask], str]
) -> None:
    app = make_app(SSE_HEARTBEAT_SECONDS=0.2)  # a closed stream is noticed at its next write
    base = serve(app)

    def gauge() -> str:
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        return next(line for line in text.splitlines() if line.startswith("sardag_sse_subscribers{"))

    streams = [urllib.request.urlopen(f"{base}/stream", timeout=5) for _ in range(2)]
    for stream in streams:
        stream.readline()  # the stream is open once its first line arrives
    assert gauge().endswith(" 2.0")  # what the websocket-streaming HPA divides by pods
    streams[0].close()
    wait_until(lambda: gauge().endswith(" 1.0"), what="the gauge to drop with a closed stream")
    streams[1].close()
