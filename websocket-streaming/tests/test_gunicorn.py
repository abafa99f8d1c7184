"""The service under real gunicorn: SSE fan-out next to REST, SIGTERM, Redis mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from websocket_streaming.fake_exchange import FakeExchange, trade_event

from shared.testing import free_port, wait_until

from .test_sse import collect_prices, open_stream

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.websocket, pytest.mark.api]
SERVICE_DIR = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")


class Service:
    """One gunicorn master running websocket-streaming on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, **env, "PORT": str(self.port), "BIND": "127.0.0.1"}
        self.proc = subprocess.Popen(
            [str(GUNICORN), "-c", str(SERVICE_DIR / "gunicorn.conf.py"), "websocket_streaming:create_app()"],
            cwd=SERVICE_DIR,
            env=full_env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=5)

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            try:
                return self.get("/health").status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(ready, 15.0, "gunicorn to answer /health")

    def price(self, symbol: str) -> Decimal | None:
        answer = self.get(f"/price/{symbol}")
        if answer.status_code != 200:
            return None
        return answer.json(parse_float=Decimal)["price"]

    def terminate(self) -> float:
        """SIGTERM the master; returns how long it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        return time.monotonic() - started


@pytest.fixture
def start_service(fake: FakeExchange, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Factory: a gunicorn-served instance pointed at the fake exchange."""
    services: list[Service] = []

    def start(**env: Any) -> Service:
        name = f"svc{len(services)}"
        metrics_dir = tmp_path / f"metrics-{name}"
        metrics_dir.mkdir()
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
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "REDIS_URL": "",
            "RATE_LIMIT_PRICE": "1000000",  # the tests poll /price
        }
        service = Service({**base_env, **{k: str(v) for k, v in env.items()}}, tmp_path / f"{name}.log")
        services.append(service)
        service.wait_ready()
        return service

    yield start
    for service in services:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(10)


def test_200_sse_subscribers_do_not_block_price(
    fake: FakeExchange,
    start_service: Callable[..., Service],
) -> None:
    service = start_service(RATE_LIMIT_STREAM=1000)  # 200 streams from one address
    wait_until(lambda: fake.open_connections() == 1, 5.0, "the upstream connection")
    streams = [open_stream(service.base) for _ in range(200)]
    fake.send(trade_event("BTCUSDT", "123.45", 1), stream="btcusdt@trade")
    started = time.monotonic()
    assert wait_until(lambda: service.price("BTCUSDT") == Decimal("123.45"), 3.0, "the price")
    assert time.monotonic() - started < 1.0
    for _, messages in streams:
        assert collect_prices(messages, 1) == [("BTCUSDT", Decimal("123.45"))]
    assert service.get("/stats").json()["sse_subscribers"] == 200
    for response, _ in streams:
        response.close()


def test_sigterm_closes_the_upstream_connection_and_exits_promptly(
    fake: FakeExchange,
    start_service: Callable[..., Service],
) -> None:
    service = start_service()
    wait_until(lambda: fake.open_connections() == 1, 5.0, "the upstream connection")
    stream, _ = open_stream(service.base)  # an open SSE stream must not hold the exit up
    took = service.terminate()
    assert service.proc.returncode == 0
    assert took < 10.0
    assert wait_until(lambda: fake.open_connections() == 0, 3.0, "upstream closed")
    assert fake.close_codes == [1000]  # a clean close frame, not a dropped socket
    stream.close()


@pytest.mark.redis
def test_redis_mode_two_instances_share_prices_and_one_upstream(
    fake: FakeExchange,
    start_service: Callable[..., Service],
    redis_url: str,
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    env = {
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "WEB_CONCURRENCY": 2,
        "WS_LEADER_LOCK_TTL_SECONDS": 1.5,
    }
    first, second = start_service(**env), start_service(**env)
    try:
        wait_until(lambda: fake.open_connections() == 1, 5.0, "one upstream connection")
        time.sleep(1.0)  # several lock renewals: still exactly one holder
        assert fake.open_connections() == 1
        fake.send(trade_event("BTCUSDT", "777.25", 1), stream="btcusdt@trade")
        for service in (first, second):
            for _ in range(4):  # several requests: they land on different workers
                wait_until(
                    lambda s=service: s.price("btcusdt") == Decimal("777.25"),
                    3.0,
                    "the same price from every worker of every instance",
                )
        stored = redis.Redis.from_url(redis_url).get(f"{prefix}price:BTCUSDT")
        assert stored is not None
        assert b'"price": "777.25"' in stored

        first.terminate()
        wait_until(lambda: fake.open_connections() == 1, 6.0, "an upstream after the stop")
        fake.send(trade_event("ETHUSDT", "3333.5", 2), stream="ethusdt@trade")
        wait_until(
            lambda: second.price("ETHUSDT") == Decimal("3333.5"),
            3.0,
            "prices flowing through the instance left",
        )
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
