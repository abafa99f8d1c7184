"""/health says whether this process ingests, and why the feed is not fresh when it is not."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_exchange import FakeExchange, trade_event
from flask import Flask
from sardag_testing import free_port, wait_until
from websocket_streaming import create_app, get_service, stop_ingest
from websocket_streaming.service import StreamingService

from .conftest import app_config

pytestmark = [pytest.mark.unit, pytest.mark.websocket, pytest.mark.api]


@pytest.fixture
def fresh_app(fake: FakeExchange) -> Iterator[Callable[..., Flask]]:
    """Factory: an app nobody started; its first request starts it, as under any server."""
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        app = create_app(app_config(fake, **overrides))
        apps.append(app)
        return app

    yield factory
    for app in apps:
        stop_ingest(app)


def upstream_detail(app: Flask) -> dict[str, Any]:
    return app.test_client().get("/health").get_json()["checks"]["upstream"]["detail"]


def test_the_first_request_starts_ingest_and_health_reports_it(
    fake: FakeExchange, fresh_app: Callable[..., Flask]
) -> None:
    app = fresh_app()
    assert fake.open_connections() == 0
    health = app.test_client().get("/health")
    assert health.status_code == 200
    assert health.get_json()["checks"]["ingest"] == {"status": "ok", "detail": "standalone"}
    wait_until(lambda: fake.open_connections() == 1, what="the upstream connection")
    for _ in range(5):
        app.test_client().get("/symbols")
    assert len(fake.connection_attempts) == 1  # started once, not once per request


def test_ingest_that_did_not_start_is_unhealthy_not_ok(
    fresh_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: StreamingService) -> None:
        raise RuntimeError("no threads left")

    monkeypatch.setattr(StreamingService, "start", broken)
    client = fresh_app().test_client()
    assert client.get("/price/BTCUSDT").status_code == 503  # answers, no 500
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["checks"]["ingest"] == {
        "status": "down",
        "detail": "ingest did not start: RuntimeError: no threads left",
    }


def test_unresolvable_host_names_the_host_and_the_offline_feed_never_the_password(
    fresh_app: Callable[..., Flask],
) -> None:
    app = fresh_app(BINANCE_WS_URL="ws://trader:hunter2@sardag-no-such-host.invalid:9443")
    wait_until(lambda: upstream_detail(app).get("last_error"), 5.0, "the first failed attempt")
    response = app.test_client().get("/health")
    detail = response.get_json()["checks"]["upstream"]["detail"]
    assert response.get_json()["checks"]["upstream"]["status"] == "degraded"
    assert detail["host"] == "sardag-no-such-host.invalid:9443"
    assert detail["last_error"].startswith("cannot resolve the host")
    assert "make run-offline" in detail["hint"]
    assert "FEED=fake" in detail["hint"]
    assert detail["lines"][0]["connected"] is False
    assert "hunter2" not in response.get_data(as_text=True)
    assert "trader" not in response.get_data(as_text=True)


def test_refused_connection_is_the_last_error_without_the_offline_hint(
    fresh_app: Callable[..., Flask],
) -> None:
    app = fresh_app(BINANCE_WS_URL=f"ws://127.0.0.1:{free_port()}")
    detail = wait_until(lambda: (d := upstream_detail(app))["last_error"] and d, 5.0, "a refused attempt")
    assert detail["last_error"] == "connection refused"
    assert detail["last_error_age_seconds"] >= 0
    assert "hint" not in detail
    assert detail["lines"][0]["next_attempt_in_seconds"] is not None


def test_one_info_line_when_a_connection_delivers(
    fake: FakeExchange, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "websocket_streaming.upstream")
    app = make_app()  # connected; the fake sends nothing until told
    wait_until(lambda: get_service(app).stats.connected, what="connected")

    def delivering() -> list[str]:
        return [r.getMessage() for r in caplog.records if "delivering" in r.getMessage()]

    assert delivering() == []  # connected is not delivering
    for n in range(3):
        fake.send(trade_event("BTCUSDT", f"{100 + n}.5", n), stream="btcusdt@trade")
    wait_until(lambda: get_service(app).stats.total_messages() == 3, what="three frames")
    # the reader counts frames at once; the supervisor thread writes the line on its next tick
    wait_until(lambda: delivering() != [], what="the delivering line")
    assert delivering() == ["upstream connection 1 delivering (line A, 8 streams)"]  # one, not one a frame
    record = next(r for r in caplog.records if "delivering" in r.getMessage())
    assert record.levelno == logging.INFO
