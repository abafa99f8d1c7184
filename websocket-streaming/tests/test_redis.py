"""Redis mode in one process: several apps share one Redis, like workers or instances do."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import redis
from fake_exchange import FakeExchange, trade_event
from flask import Flask
from sardag_testing import free_port, wait_until
from websocket_streaming import get_service, stop_ingest

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.websocket]


def price(app: Flask, symbol: str) -> Decimal | None:
    """The exact price /price/<symbol> answers, or None while it has none."""
    answer = app.test_client().get(f"/price/{symbol}")
    if answer.status_code != 200:
        return None
    return json.loads(answer.data, parse_float=Decimal)["price"]


@pytest.mark.slow
def test_one_leader_and_every_app_serves_the_same_book(
    fake: FakeExchange,
    redis_app: Callable[..., Flask],
    redis_url: str,
    prefix: str,
) -> None:
    apps = [redis_app(), redis_app()]
    wait_until(lambda: fake.open_connections() == 1, 3.0, "one upstream connection")
    roles = sorted(get_service(app).role for app in apps)
    assert roles == ["follower", "leader"]
    fake.send(trade_event("BTCUSDT", "101.10", 1), stream="btcusdt@trade")
    for app in apps:
        wait_until(lambda a=app: price(a, "BTCUSDT") == Decimal("101.10"), 3.0, "the price")
    stored = redis.Redis.from_url(redis_url)
    assert stored.ttl(f"{prefix}price:BTCUSDT") > 0

    late = redis_app()  # a worker started later reads the book from price:* at once
    wait_until(lambda: price(late, "BTCUSDT") == Decimal("101.10"), 2.0, "the snapshot")
    assert fake.open_connections() == 1


@pytest.mark.slow
def test_the_follower_takes_over_when_the_leader_stops(
    fake: FakeExchange,
    redis_app: Callable[..., Flask],
) -> None:
    first = redis_app()
    wait_until(lambda: get_service(first).role == "leader", 3.0, "a leader")
    second = redis_app()
    wait_until(lambda: fake.open_connections() == 1, 3.0, "the leader's connection")
    stop_ingest(first)
    wait_until(lambda: get_service(second).role == "leader", 3.0, "the take-over")
    wait_until(lambda: fake.open_connections() == 1, 3.0, "the new leader's connection")
    fake.send(trade_event("ETHUSDT", "2500.5", 2), stream="ethusdt@trade")
    wait_until(lambda: price(second, "ETHUSDT") == Decimal("2500.5"), 3.0, "prices again")


@pytest.mark.slow
def test_unreachable_redis_is_degraded_not_a_crash(make_app: Callable[..., Flask]) -> None:
    app = make_app(
        connect=False, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", WS_LEADER_LOCK_TTL_SECONDS=0.3
    )
    time.sleep(0.5)  # several failed lock attempts
    client = app.test_client()
    health = client.get("/health")
    assert health.status_code == 200
    checks = health.get_json()["checks"]
    assert checks["ingest"]["status"] == "ok"  # the Redis threads survive the errors
    assert checks["upstream"]["detail"]["redis"] == "unreachable"
    assert client.get("/price/BTCUSDT").status_code == 503
    assert client.get("/stats").status_code == 200


@pytest.mark.slow
def test_ingest_disabled_instance_serves_from_redis_but_never_connects(
    fake: FakeExchange,
    redis_app: Callable[..., Flask],
) -> None:
    reader = redis_app(INGEST_ENABLED=False)
    time.sleep(1.0)  # several lock periods: it never takes the lock
    assert fake.open_connections() == 0
    assert get_service(reader).role == "follower"
    leader = redis_app()
    wait_until(lambda: fake.open_connections() == 1, 3.0, "the leader's connection")
    fake.send(trade_event("BTCUSDT", "64000.01", 3), stream="btcusdt@trade")
    wait_until(lambda: price(reader, "BTCUSDT") == Decimal("64000.01"), 3.0, "the price")
    stop_ingest(leader)
    time.sleep(1.0)
    assert fake.open_connections() == 0
