"""The service under real gunicorn: SSE fan-out next to REST, SIGTERM, Redis mode."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from fake_exchange import FakeExchange, trade_event
from sardag_testing import wait_until
from sardag_testing.processes import Launcher, Running, rss_kib

from .test_sse import book_ticker, collect_prices, open_stream, send_trades, stalled_subscriber

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.websocket, pytest.mark.api]


def get(service: Running, path: str) -> requests.Response:
    return requests.get(service.url + path, timeout=5)


def price(service: Running, symbol: str) -> Decimal | None:
    """The price `service` answers for `symbol`, None while it has none."""
    answer = get(service, f"/price/{symbol}")
    if answer.status_code != 200:
        return None
    return answer.json(parse_float=Decimal)["price"]


def terminate(service: Running) -> float:
    """SIGTERM the master; returns how long it took to exit."""
    started = time.monotonic()
    service.stop(30)
    return time.monotonic() - started


@pytest.fixture
def start_service(fake: FakeExchange, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Factory: websocket-streaming under its gunicorn.conf.py, pointed at the fake exchange."""
    base_env = {
        "BINANCE_WS_URL": fake.ws_url,
        "BINANCE_REST_URL": fake.rest_url,
        "SYMBOLS": "BTCUSDT,ETHUSDT",
        "WS_STREAMS": "trade",
        "WS_CONNECTIONS": "1",  # these tests count upstream connections
        "PRICE_STALE_SECONDS": "5",
        "WS_BACKFILL_ENABLED": "0",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": "",
        "RATE_LIMIT_PRICE": "1000000",  # the tests poll /price
    }
    with Launcher(tmp_path) as launch:

        def start(workers: int = 1, **env: Any) -> Running:
            settings = {**base_env, **{k: str(v) for k, v in env.items()}}
            return launch.gunicorn("websocket-streaming", workers=workers, **settings)

        yield start


def test_200_sse_subscribers_do_not_block_price(
    fake: FakeExchange,
    start_service: Callable[..., Running],
) -> None:
    service = start_service(RATE_LIMIT_STREAM=1000, SSE_MAX_STREAMS_PER_CLIENT=300)  # 200 from one address
    wait_until(lambda: fake.open_connections() == 1, 5.0, "the upstream connection")
    streams = [open_stream(service.url) for _ in range(200)]
    fake.send(trade_event("BTCUSDT", "123.45", 1), stream="btcusdt@trade")
    # /price answers while all 200 streams are held open (a worker thread per stream would
    # leave none for it): the wait's bound is a failure cut-off, not a speed assertion
    assert wait_until(lambda: price(service, "BTCUSDT") == Decimal("123.45"), 5.0, "the price")
    for _, messages in streams:
        assert collect_prices(messages, 1) == [("BTCUSDT", Decimal("123.45"))]
    assert get(service, "/stats").json()["sse_subscribers"] == 200
    for response, _ in streams:
        response.close()


def test_sigterm_closes_the_upstream_connection_and_exits_promptly(
    fake: FakeExchange,
    start_service: Callable[..., Running],
) -> None:
    service = start_service()
    wait_until(lambda: fake.open_connections() == 1, 5.0, "the upstream connection")
    stream, _ = open_stream(service.url)  # an open SSE stream must not hold the exit up
    took = terminate(service)
    assert service.process.returncode == 0
    assert took < 10.0
    assert wait_until(lambda: fake.open_connections() == 0, 3.0, "upstream closed")
    assert fake.close_codes == [1000]  # a clean close frame, not a dropped socket
    stream.close()


@pytest.mark.redis
def test_redis_mode_two_instances_share_prices_and_one_upstream(
    fake: FakeExchange,
    start_service: Callable[..., Running],
    redis_url: str,
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    env = {
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "WS_LEADER_LOCK_TTL_SECONDS": 1.5,
    }
    first, second = start_service(2, **env), start_service(2, **env)
    try:
        wait_until(lambda: fake.open_connections() == 1, 5.0, "one upstream connection")
        time.sleep(1.0)  # several lock renewals: still exactly one holder
        assert fake.open_connections() == 1
        fake.send(trade_event("BTCUSDT", "777.25", 1), stream="btcusdt@trade")
        for service in (first, second):
            for _ in range(4):  # several requests: they land on different workers
                wait_until(
                    lambda s=service: price(s, "btcusdt") == Decimal("777.25"),
                    3.0,
                    "the same price from every worker of every instance",
                )
        stored = redis.Redis.from_url(redis_url).get(f"{prefix}price:BTCUSDT")
        assert stored is not None
        assert b'"price": "777.25"' in stored

        terminate(first)
        wait_until(lambda: fake.open_connections() == 1, 6.0, "an upstream after the stop")
        fake.send(trade_event("ETHUSDT", "3333.5", 2), stream="ethusdt@trade")
        wait_until(
            lambda: price(second, "ETHUSDT") == Decimal("3333.5"),
            3.0,
            "prices flowing through the instance left",
        )
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)


def test_a_subscriber_that_never_reads_is_cut_while_200_others_get_every_event(
    fake: FakeExchange,
    start_service: Callable[..., Running],
) -> None:
    service = start_service(
        RATE_LIMIT_STREAM=1000, SSE_MAX_STREAMS_PER_CLIENT=300, SSE_WRITE_TIMEOUT_SECONDS=1, LOG_LEVEL="INFO"
    )
    wait_until(lambda: fake.open_connections() == 1, 5.0, "the upstream connection")
    streams = [open_stream(service.url) for _ in range(200)]  # `price` events only
    stalled = stalled_subscriber(service.url, "?events=price,quote")
    assert get(service, "/stats").json()["sse_subscribers"] == 201
    [worker] = service.children()
    rss_before = rss_kib(worker)
    for n in range(4000):  # quotes only the stalled subscriber asked for: its socket fills up
        fake.send(book_ticker("BTCUSDT", n + 1, f"{100 + n % 50}.5"), stream="btcusdt@bookTicker")
    trades = [("ETHUSDT", f"{2000 + n}.5") for n in range(20)]
    send_trades(fake, trades)
    expected = [(s, Decimal(p)) for s, p in trades]
    for _, messages in streams:
        assert collect_prices(messages, len(expected)) == expected
    wait_until(lambda: get(service, "/stats").json()["sse_subscribers"] == 200, 10.0, "the stalled stream cut")
    stats = get(service, "/stats").json()
    assert stats["sse_write_timeouts"] + stats["sse_overflows"] == 1
    assert rss_kib(worker) - rss_before < 64 * 1024  # what it buffered is bounded (128 KiB socket)
    stalled.close()
    for response, _ in streams:
        response.close()


def test_gunicorn_threads_below_the_stream_cap_is_said_at_start(
    start_service: Callable[..., Running],
) -> None:
    service = start_service(GUNICORN_THREADS=4)
    assert get(service, "/stats").json()["sse_max_subscribers"] == 2
    assert any("GUNICORN_THREADS=4 caps SSE streams at 2 per worker" in line for line in service.log_messages())
