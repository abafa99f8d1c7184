"""Freshness: ages computed when an answer is sent, from this host's clock only."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from websocket_streaming.book import PriceBook
from websocket_streaming.parser import PriceUpdate
from websocket_streaming.sse import DEFAULT_EVENTS, StreamSettings, price_events
from websocket_streaming.stats import IngestStats

pytestmark = [pytest.mark.websocket]
SETTINGS = StreamSettings(stale_after=0.2, heartbeat=15.0, retry=1.0)  # PRICE_STALE_SECONDS=0.2


def trade(symbol: str, price: str, when: int | None) -> PriceUpdate:
    return PriceUpdate(symbol, "trade", when, price=Decimal(price))


def events(chunk: bytes) -> list[dict]:
    """The `data:` of every price event in an SSE chunk."""
    return [json.loads(line[6:]) for line in chunk.decode().splitlines() if line.startswith("data: ")]


@pytest.mark.unit
@pytest.mark.parametrize("how", ["snapshot", "resync"])
def test_a_snapshot_or_resync_reports_the_age_at_send_time_not_at_first_send(how: str) -> None:
    book = PriceBook(["BTCUSDT", "ETHUSDT"], ring_size=2)
    live = price_events(book, None, None, DEFAULT_EVENTS, SETTINGS, IngestStats())
    next(live)  # connected: now waiting for live updates
    book.apply(trade("BTCUSDT", "100", 1))
    first = events(next(live))
    assert first[0]["stale"] is False  # sent live, at once: fresh
    time.sleep(0.4)  # older than PRICE_STALE_SECONDS=0.2 now
    if how == "snapshot":  # a client reconnecting with an id it cannot resume from
        stream = price_events(book, "unknown-1", None, DEFAULT_EVENTS, SETTINGS, IngestStats())
        sent = events(next(stream))
    else:  # a client that fell a whole ring behind
        stream = price_events(book, None, None, DEFAULT_EVENTS, SETTINGS, IngestStats())
        next(stream)
        for n in range(3):  # more updates than the ring holds before this client reads
            book.apply(trade("ETHUSDT", str(n), 2 + n))
        sent = events(next(stream))
    btc = [e for e in sent if e["symbol"] == "BTCUSDT"]
    assert btc, sent
    assert btc[0]["stale"] is True
    assert btc[0]["age_seconds"] >= 0.4
