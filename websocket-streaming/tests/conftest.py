"""Fixtures: the fake exchange on a free loopback port, and the app wired to it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fake_exchange import FakeExchange
from flask import Flask
from sardag_testing import wait_until
from websocket_streaming import create_app, start_ingest, stop_ingest
from werkzeug.serving import BaseWSGIServer, make_server

SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "BNBBTC")


def app_config(fake: FakeExchange, **overrides: Any) -> dict[str, Any]:
    """Test configuration: the fake's URLs, short timings, no Redis unless asked."""
    config: dict[str, Any] = {
        "TESTING": True,
        "REDIS_URL": None,
        "BINANCE_WS_URL": fake.ws_url,
        "BINANCE_REST_URL": fake.rest_url,
        "SYMBOLS": SYMBOLS,
        "WS_STREAMS": ("aggTrade", "ticker"),
        "WS_CONNECTIONS": 1,  # one connection's mechanics; the A/B tests ask for two
        "PRICE_STALE_SECONDS": 5.0,
        "WS_BACKOFF_BASE_SECONDS": 0.1,
        "WS_BACKOFF_CAP_SECONDS": 1.0,
        "WS_BACKFILL_ENABLED": False,
        "BINANCE_TIME_CHECK_SECONDS": 0,  # tests count REST requests; test_latency.py asks for it
        "WS_ROTATION_OVERLAP_SECONDS": 0.3,
        "SSE_HEARTBEAT_SECONDS": 15.0,
        "LOG_FORMAT": "text",
        "RATE_LIMITS": {"price": 1_000_000},  # tests poll /price; test_api checks the 300
    }
    config.update(overrides)
    return config


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    """A fake Binance on a free loopback port; events only when the test sends them."""
    with FakeExchange(rate=0, ping_interval=0.5, ping_timeout=5, shutdown_grace=0.5) as exchange:
        yield exchange


@pytest.fixture
def make_app(fake: FakeExchange) -> Iterator[Callable[..., Flask]]:
    """Factory: an app connected to the fake (ingest running), stopped after the test."""
    apps: list[Flask] = []

    def factory(connect: bool = True, **overrides: Any) -> Flask:
        app = create_app(app_config(fake, **overrides))
        apps.append(app)
        start_ingest(app)
        if connect:
            wait_until(lambda: fake.open_connections() >= 1, what="upstream connection")
        return app

    yield factory
    for app in apps:
        stop_ingest(app)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """The service, connected to the fake exchange."""
    return make_app()


@pytest.fixture
def idle_app(fake: FakeExchange) -> Iterator[Flask]:
    """The service with ingest off: nothing was ever received."""
    app = create_app(app_config(fake, INGEST_ENABLED=False))
    yield app
    stop_ingest(app)  # its first request started the (idle) service


@pytest.fixture
def serve() -> Iterator[Callable[[Flask], str]]:
    """Serve an app on a free loopback port with a threaded server; returns its base URL."""
    servers: list[tuple[BaseWSGIServer, threading.Thread]] = []

    def start(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        # shutdown() waits until the loop looks again: every 0.5 s by default, per test
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}:"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{name}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_app(
    make_app: Callable[..., Flask],
    redis_url: str,
    prefix: str,
) -> Callable[..., Flask]:
    """Factory: an app in Redis mode (this test's key prefix, a short lock TTL)."""

    def factory(**overrides: object) -> Flask:
        settings = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": prefix, "WS_LEADER_LOCK_TTL_SECONDS": 0.6}
        return make_app(connect=False, **{**settings, **overrides})

    return factory
