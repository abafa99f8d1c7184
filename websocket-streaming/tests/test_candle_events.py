"""SSE `candle` events: what changed, in order with prices, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
from fake_exchange import FakeExchange
from fake_exchange.drill import TradeFlow
from flask import Flask

from .test_sse import EventStream, open_stream

pytestmark = [pytest.mark.unit, pytest.mark.websocket, pytest.mark.api, pytest.mark.slow]


def candles_from(stream: EventStream, count: int) -> list[dict]:
    """The next `count` candle events' data (prices in between are skipped)."""
    found = []
    for kind, data in stream:
        if kind == "candle":
            found.append(json.loads(data, parse_float=Decimal))
            if len(found) == count:
                break
    return found


def test_candle_events_carry_the_candle_and_resume_exactly_with_last_event_id(
    fake: FakeExchange, make_app: Callable[..., Flask], serve: Callable[[Flask], str]
) -> None:
    app = make_app(WS_STREAMS=("aggTrade",), CANDLE_INTERVALS=("1m",), CANDLE_EVENT_SECONDS=0.05)
    base = serve(app)
    flow = TradeFlow(fake, ("BTCUSDT",), rate=40).start()
    try:
        _, first = open_stream(base, "?events=price,candle")
        got = candles_from(first, 3)
        first.close()
        assert {c["symbol"] for c in got} == {"BTCUSDT"}
        assert all(c["interval"] == "1m" and c["source"] == "trades" for c in got)
        assert [c["last_agg_id"] for c in got] == sorted(c["last_agg_id"] for c in got)
        time.sleep(0.3)  # events the client misses while away
        _, second = open_stream(base, "?events=candle", last_event_id=first.last_id)
        resumed = candles_from(second, 2)
        second.close()
    finally:
        flow.stop()
    assert resumed[0]["last_agg_id"] > got[-1]["last_agg_id"]  # after the last one, nothing repeated
    epoch, _, seq = str(first.last_id).rpartition("-")  # the last event read was a candle
    assert epoch.endswith("c")
    assert second.ids[:2] == [f"{epoch}-{int(seq) + 1}", f"{epoch}-{int(seq) + 2}"]  # none missed
    answer = app.test_client().get("/candles/BTCUSDT?interval=1m").get_json()
    assert answer["candles"][-1]["last_agg_id"] >= resumed[-1]["last_agg_id"]
