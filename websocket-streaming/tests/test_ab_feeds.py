"""WS_CONNECTIONS=2: an A and a B feed; losing either is a non-event while the other delivers."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fake_exchange import FAULT_KINDS, FakeExchange
from fake_exchange.drill import NumberedTrades, PriceSampler, SseReader
from flask import Flask
from sardag_testing import wait_until
from websocket_streaming import get_service

from .test_rotation import assert_exactly_once

pytestmark = [pytest.mark.unit, pytest.mark.slow, pytest.mark.websocket, pytest.mark.api]
# line B opens 0.2 s after A delivers (1 s in production): the drills need both, not the wait
AB = {
    "SYMBOLS": ("BTCUSDT", "ETHUSDT"),
    "WS_STREAMS": ("trade",),
    "WS_CONNECTIONS": 2,
    "WS_LINE_STAGGER_SECONDS": 0.2,
}


@dataclass
class Drill:
    """An A/B service served over HTTP, an SSE subscriber to it, and numbered trades flowing."""

    app: Flask
    base: str
    events: SseReader
    trades: NumberedTrades

    def delivering(self) -> int:
        """How many of the two connections deliver."""
        upstream = get_service(self.app).upstream
        return 0 if upstream is None else upstream.delivering()


@pytest.fixture
def drill(
    fake: FakeExchange, make_app: Callable[..., Flask], serve: Callable[[Flask], str]
) -> Callable[..., Drill]:
    """Factory: subscribe to a new A/B service, then start the trades (`rate` a second)."""

    def start(rate: float = 100, **overrides: Any) -> Drill:
        app = make_app(**{**AB, **overrides})
        base = serve(app)
        events = SseReader(base).start()
        return Drill(app, base, events, NumberedTrades(fake, rate=rate).start())

    return start


def test_two_connections_open_at_different_moments_and_each_update_is_published_once(
    fake: FakeExchange, drill: Callable[..., Drill]
) -> None:
    run = drill(rate=200, WS_LINE_STAGGER_SECONDS=1.0)  # the production default
    app, events, trades = run.app, run.events, run.trades
    wait_until(lambda: fake.open_connections() == 2, 5.0, "the B connection")
    first, second = fake.connection_attempts[:2]
    assert second - first >= 0.9  # B opens WS_LINE_STAGGER_SECONDS after A delivered, not with it
    time.sleep(1.0)  # both deliver every trade
    received = events.wait_for(trades.stop())
    assert_exactly_once(received, trades.sent)
    stats = get_service(app).summary()
    assert stats["twin_frames_skipped"] + stats["duplicates_dropped"] >= len(trades.sent) // 3  # B's twins
    lines = app.test_client().get("/health").get_json()["checks"]["upstream"]["detail"]["lines"]
    assert [(line["line"], line["delivering"]) for line in lines] == [("A", True), ("B", True)]


@pytest.mark.parametrize("fault", FAULT_KINDS)
def test_a_fault_on_one_connection_leaves_no_stale_price_and_no_missing_or_repeated_event(
    fake: FakeExchange, drill: Callable[..., Drill], fault: str
) -> None:
    stale = 0.5  # the watchdog replaces a silent connection after 0.5 s (50 trades' time)
    run = drill(PRICE_STALE_SECONDS=stale)
    events, trades = run.events, run.trades
    wait_until(lambda: run.delivering() == 2, 5.0, "both feeds delivering")
    sampler = PriceSampler(run.base, "BTCUSDT", interval=0.025).start()
    time.sleep(0.3)
    struck_at = time.monotonic()
    fake.fault(fault, only=0)
    if fault != "garbage_burst":  # every other fault ends the connection: A must come back
        wait_until(lambda: len(fake.connection_attempts) >= 3, 6.0, "a new A connection")
    wait_until(lambda: run.delivering() == 2, 6.0, "both feeds again")
    time.sleep(max(0.0, struck_at + 1.5 * stale - time.monotonic()))  # sample past the watchdog at least
    received = events.wait_for(trades.stop())
    sampler.stop()
    assert len(sampler.samples) > 30
    assert sampler.stale(limit=stale) == []  # every sample a 200 with a price under 0.5 s old
    assert_exactly_once(received, trades.sent)


def test_server_shutdown_on_both_connections_rotates_each_without_a_gap(
    fake: FakeExchange, drill: Callable[..., Drill]
) -> None:
    run = drill()
    app, events, trades = run.app, run.events, run.trades
    wait_until(lambda: run.delivering() == 2, 5.0, "both feeds delivering")
    fake.server_shutdown()  # the same frame on both: each connection still rotates
    wait_until(lambda: get_service(app).stats.rotations == 2, 5.0, "both rotated")
    wait_until(lambda: len(fake.closed) == 2 and fake.open_connections() == 2, 5.0, "the old pair closed")
    received = events.wait_for(trades.stop())
    assert_exactly_once(received, trades.sent)
    assert get_service(app).stats.reconnects == 0


def test_a_solo_worker_keeps_one_connection_and_a_leader_its_pair_again(
    fake: FakeExchange, drill: Callable[..., Drill]
) -> None:
    # Redis mode: a worker that loses Redis ingests alone on one connection (the attempt
    # budget is per host), and gets its B feed back once it leads again. No update is lost.
    run = drill()
    service = get_service(run.app)
    wait_until(lambda: run.delivering() == 2, 5.0, "both feeds delivering")
    service._on_role("solo")
    wait_until(lambda: fake.open_connections() == 1, 5.0, "the B connection closed")
    assert service.summary()["upstream_connections"] == 1
    time.sleep(0.5)
    assert run.delivering() == 1
    service._on_role("leader")
    wait_until(lambda: fake.open_connections() == 2 and run.delivering() == 2, 10.0, "the B feed again")
    assert service.summary()["upstream_connections"] == 2
    received = run.events.wait_for(run.trades.stop())
    assert_exactly_once(received, run.trades.sent)
