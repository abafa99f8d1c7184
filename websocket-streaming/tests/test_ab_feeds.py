"""WS_CONNECTIONS=2: an A and a B feed; losing either is a non-event while the other delivers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from flask import Flask
from websocket_streaming import get_service
from websocket_streaming.fake_exchange import FAULT_KINDS, FakeExchange
from websocket_streaming.fake_exchange.drill import NumberedTrades, PriceSampler, SseReader

from shared.testing import wait_until

from .test_rotation import assert_exactly_once

pytestmark = [pytest.mark.unit, pytest.mark.slow, pytest.mark.websocket, pytest.mark.api]
AB = {"SYMBOLS": ("BTCUSDT", "ETHUSDT"), "WS_STREAMS": ("trade",), "WS_CONNECTIONS": 2}


def test_two_connections_open_at_different_moments_and_each_update_is_published_once(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    app = make_app(**AB)
    events = SseReader(serve(app)).start()
    trades = NumberedTrades(fake, rate=200).start()
    wait_until(lambda: fake.open_connections() == 2, 5.0, "the B connection")
    first, second = fake.connection_attempts[:2]
    assert second - first >= 0.9  # B opens a second after A delivered, not with it
    time.sleep(1.0)  # both deliver every trade
    received = events.wait_for(trades.stop())
    assert_exactly_once(received, trades.sent)
    stats = get_service(app).report()
    assert stats["twin_frames_skipped"] + stats["duplicates_dropped"] >= len(trades.sent) // 3  # B's twins
    lines = app.test_client().get("/health").get_json()["checks"]["upstream"]["detail"]["lines"]
    assert [(line["line"], line["delivering"]) for line in lines] == [("A", True), ("B", True)]


@pytest.mark.parametrize("fault", FAULT_KINDS)
def test_a_fault_on_one_connection_leaves_no_stale_price_and_no_missing_or_repeated_event(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
    fault: str,
) -> None:
    app = make_app(**AB, PRICE_STALE_SECONDS=2.0)  # the watchdog replaces a silent one after 2 s
    base = serve(app)
    events = SseReader(base).start()
    trades = NumberedTrades(fake, rate=100).start()
    wait_until(lambda: get_service(app).upstream.delivering() == 2, 5.0, "both feeds delivering")  # type: ignore[union-attr]
    sampler = PriceSampler(base, "BTCUSDT", interval=0.05).start()
    time.sleep(0.3)
    struck_at = time.monotonic()
    fake.fault(fault, only=0)
    if fault != "garbage_burst":  # every other fault ends the connection: A must come back
        wait_until(lambda: len(fake.connection_attempts) >= 3, 6.0, "a new A connection")
    wait_until(lambda: get_service(app).upstream.delivering() == 2, 6.0, "both feeds again")  # type: ignore[union-attr]
    time.sleep(max(0.0, struck_at + 2.0 - time.monotonic()))  # sample 2 s after the fault at least
    received = events.wait_for(trades.stop())
    sampler.stop()
    assert len(sampler.samples) > 30
    assert sampler.stale(limit=1.0) == []  # every sample a 200 with a price under 1 s old
    assert_exactly_once(received, trades.sent)


def test_server_shutdown_on_both_connections_rotates_each_without_a_gap(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    app = make_app(**AB)
    events = SseReader(serve(app)).start()
    trades = NumberedTrades(fake, rate=100).start()
    wait_until(lambda: get_service(app).upstream.delivering() == 2, 5.0, "both feeds delivering")  # type: ignore[union-attr]
    fake.server_shutdown()  # the same frame on both: each connection still rotates
    wait_until(lambda: get_service(app).stats.rotations == 2, 5.0, "both rotated")
    wait_until(lambda: len(fake.closed) == 2 and fake.open_connections() == 2, 5.0, "the old pair closed")
    received = events.wait_for(trades.stop())
    assert_exactly_once(received, trades.sent)
    assert get_service(app).stats.reconnects == 0
