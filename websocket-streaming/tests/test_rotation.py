"""Make-before-break rotation: no gap, no duplicate, and the old connection closed by us."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from fake_exchange import FakeExchange
from fake_exchange.drill import NumberedTrades, SseReader
from flask import Flask
from sardag_testing import wait_until
from websocket_streaming import get_service

pytestmark = [pytest.mark.unit, pytest.mark.slow, pytest.mark.websocket, pytest.mark.api]


def assert_exactly_once(received: list[tuple[str, int]], sent: list[tuple[str, int]]) -> None:
    """Every update sent reached the subscriber, none twice, nothing else."""
    repeated = [update for update, n in Counter(received).items() if n > 1]
    assert repeated == [], f"{len(repeated)} updates published twice"
    missing = set(sent) - set(received)
    assert not missing, f"{len(missing)} of {len(sent)} updates never published"
    assert set(received) == set(sent)


def test_rotation_with_twin_frames_publishes_each_update_once_and_closes_the_old_connection(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    overlap = 1.0
    app = make_app(SYMBOLS=("BTCUSDT", "ETHUSDT"), WS_STREAMS=("trade",), WS_ROTATION_OVERLAP_SECONDS=overlap)
    service = get_service(app)
    events = SseReader(serve(app)).start()
    trades = NumberedTrades(fake, rate=200).start()
    wait_until(lambda: len(events.received) > 20, what="events before the rotation")
    fake.server_shutdown(close=False)  # the exchange never closes the old connection itself
    wait_until(lambda: service.stats.rotations == 1, 3.0, "the switch to the new connection")
    switched_at = time.monotonic()
    wait_until(lambda: fake.closed, overlap + 3.0, "the old connection closed")
    closed = fake.closed[0]
    wait_until(lambda: len(events.received) > len(trades.sent) - 50, what="events after the rotation")
    received = events.wait_for(trades.stop())

    assert_exactly_once(received, trades.sent)
    twins = service.summary()
    assert twins["twin_frames_skipped"] + twins["duplicates_dropped"] > 20  # both delivered the same trades
    assert (closed.code, closed.by_client) == (1000, True)  # closed by the service, with a close frame
    assert closed.closed_at - switched_at >= overlap - 0.2  # not before the overlap ended
    assert fake.open_connections() == 1
    assert service.stats.reconnects == 0


def test_rotation_at_the_maximum_age_closes_each_old_connection_itself(
    fake: FakeExchange,
    make_app: Callable[..., Flask],
    serve: Callable[[Flask], str],
) -> None:
    app = make_app(
        SYMBOLS=("BTCUSDT", "ETHUSDT"),
        WS_STREAMS=("trade",),
        WS_MAX_CONNECTION_AGE_SECONDS=0.4,  # twice the overlap: each old connection drains, then closes
        WS_ROTATION_OVERLAP_SECONDS=0.2,
    )
    events = SseReader(serve(app)).start()
    trades = NumberedTrades(fake, rate=200).start()
    wait_until(lambda: len(fake.closed) >= 2, 8.0, "two rotations")
    received = events.wait_for(trades.stop())
    assert all((c.code, c.by_client) == (1000, True) for c in fake.closed)
    assert get_service(app).stats.rotations >= 2
    assert_exactly_once(received, trades.sent)
