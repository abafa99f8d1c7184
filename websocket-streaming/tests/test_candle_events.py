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


def until_heartbeat(stream: EventStream) -> list[tuple[str, str]]:
    """Every event before the next heartbeat (a snapshot, when no trade comes meanwhile)."""
    found = []
    for kind, data in stream:
        if kind == "comment":
            if data == "heartbeat":
                break
            continue
        found.append((kind, data))
    return found


def test_a_stream_that_cannot_resume_gets_the_newest_two_candles_of_each_interval_in_its_snapshot(
    fake: FakeExchange, make_app: Callable[..., Flask], serve: Callable[[Flask], str]
) -> None:
    app = make_app(
        WS_STREAMS=("aggTrade",),
        CANDLE_INTERVALS=("1s", "1m"),
        CANDLE_EVENT_SECONDS=0.05,
        SSE_HEARTBEAT_SECONDS=0.5,
        RATE_LIMITS={"price": 1_000_000, "candles": 1_000_000},
    )
    base = serve(app)
    flow = TradeFlow(fake, ("BTCUSDT", "ETHUSDT"), rate=40).start()
    time.sleep(2.5)  # a few 1 s candles close
    flow.stop()
    time.sleep(2.5)  # the clock closed the last 1 s candles (a second's grace) and they became events
    client = app.test_client()
    newest = {
        (s, i): client.get(f"/candles/{s}?interval={i}&limit=2").get_json()["candles"]
        for s in ("BTCUSDT", "ETHUSDT")
        for i in ("1s", "1m")
    }
    _, stream = open_stream(base, "?events=price,candle", last_event_id="0123456789c-1")  # not in the ring
    snapshot = until_heartbeat(stream)
    stream.close()
    candles = [json.loads(data) for kind, data in snapshot if kind == "candle"]
    got = {
        key: sorted((c for c in candles if (c["symbol"], c["interval"]) == key), key=lambda c: c["open_time"])
        for key in newest
    }
    assert got == newest  # the open (or newest) one and the one before it, as /candles has them
    assert {kind for kind, _ in snapshot} == {"price", "candle"}
    assert [len(got[(s, "1s")]) for s in ("BTCUSDT", "ETHUSDT")] == [2, 2]  # no more than two
    assert [got[(s, "1s")][0]["closed"] for s in ("BTCUSDT", "ETHUSDT")] == [True, True]
    _, prices_only = open_stream(base, "?events=price", last_event_id="0123456789c-1")
    assert {kind for kind, _ in until_heartbeat(prices_only)} == {"price"}  # candles only when asked
    prices_only.close()
