"""Proof: under drops, rotations and a Redis outage, every closed candle served equals the
candle computed from the fake exchange's full record of trades, field for field.

The fake trades whether or not the service listens (`TradeFlow`), so every fault leaves a
hole in the aggregate trade ids that only its REST API (`aggTrades?fromId=`) can fill.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from fake_exchange import FakeExchange
from fake_exchange.drill import TradeFlow
from fake_exchange.trades import AggTrade, buckets
from flask import Flask
from sardag_testing import wait_until
from sardag_testing.servers import PrivateRedis
from websocket_streaming import get_service

SYMBOLS = ("BTCUSDT", "ETHUSDT")
INTERVALS = ("1s", "1m")  # 1 s candles: many close during a short storm
CANDLE_SETTINGS: dict[str, Any] = {
    "WS_STREAMS": ("aggTrade",),
    "CANDLE_INTERVALS": INTERVALS,
    "CANDLE_EVENT_SECONDS": 0.1,
    "WS_ROTATION_OVERLAP_SECONDS": 0.2,
    "RATE_LIMITS": {"price": 1_000_000, "candles": 1_000_000},  # the test polls /candles
}
DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume")


def expected_candles(trades: list[AggTrade], interval: str) -> dict[int, dict[str, Any]]:
    """Each candle as computed from the exchange's record: open time -> fields. An interval
    with no trade between two with trades is there too, as Binance's klines list it."""
    candles, close = {}, Decimal(0)
    for opened, group in buckets(trades, interval).items():
        prices = [t.price for t in group] or [close]
        close = prices[-1]
        candles[opened] = {
            "open": prices[0],
            "high": max(prices),
            "low": min(prices),
            "close": prices[-1],
            "volume": sum((t.qty for t in group), Decimal(0)),
            "quote_volume": sum((t.qty * t.price for t in group), Decimal(0)),
            "trades": sum(t.last_trade_id - t.first_trade_id + 1 for t in group),
            "first_agg_id": group[0].agg_id if group else None,
            "last_agg_id": group[-1].agg_id if group else None,
        }
    return candles


def served(app: Flask, symbol: str, interval: str) -> list[dict[str, Any]]:
    answer = app.test_client().get(f"/candles/{symbol}?interval={interval}&limit=500")
    assert answer.status_code == 200
    candles: list[dict[str, Any]] = json.loads(answer.data, parse_float=Decimal)["candles"]
    return candles


def differences(app: Flask, fake: FakeExchange) -> list[str]:
    """Every closed candle `app` serves that differs from the record (empty: all equal)."""
    found = []
    for symbol in SYMBOLS:
        trades = fake.market.record.all(symbol)
        for interval in get_service(app).candles.builder.intervals:
            truth = expected_candles(trades, interval)
            candles = served(app, symbol, interval)
            for candle in candles:
                if not candle["closed"]:
                    continue
                want = truth.get(candle["open_time"])
                fields: tuple[str, ...] = (*DECIMALS, "trades")
                if candle["source"] == "trades":
                    fields += ("first_agg_id", "last_agg_id")
                    # the newest has no trade after it yet: whether its last trades came is unknown
                    if not candle["complete"] and candle is not candles[-1]:
                        found.append(f"{symbol} {interval} {candle['open_time']}: not complete")
                got = {f: Decimal(candle[f]) if f in DECIMALS else candle[f] for f in fields}
                if want is None or got != {f: want[f] for f in fields}:
                    found.append(f"{symbol} {interval} {candle['open_time']}: {got} != {want}")
    return found


def settled(apps: list[Flask]) -> bool:
    """Every hole healed (or given up) and the candles published."""
    return all(get_service(a).candles.healer.idle() for a in apps)


def delivered(fake: FakeExchange, apps: list[Flask]) -> bool:
    """Every ingesting app applied the exchange's newest trade of each symbol."""
    last = {s: trade.time_ms for s in SYMBOLS if (trade := fake.market.record.last(s)) is not None}
    builders = [get_service(a).candles.builder for a in apps if get_service(a).role != "follower"]
    return all(b.newest_time(s) >= when for b in builders for s, when in last.items())


def roles(apps: list[Flask]) -> list[str]:
    return sorted(get_service(a).role for a in apps)


def closed_count(app: Flask) -> int:
    return sum(1 for s in SYMBOLS for c in served(app, s, "1s") if c["closed"])


@contextmanager
def trading(fake: FakeExchange, rate: float = 80.0) -> Iterator[TradeFlow]:
    flow = TradeFlow(fake, SYMBOLS, rate).start()
    try:
        yield flow
    finally:
        flow.stop()


def storm(fake: FakeExchange, apps: list[Flask], rounds: int = 3, pause: float = 0.4) -> None:
    """Drops, closes and rotations, with trades going on between them (`pause` s: a reconnect
    takes a few ms here, and 32 trades come in 0.4 s at the default rate)."""
    for n in range(rounds):
        time.sleep(pause)
        fake.drop()
        time.sleep(pause)
        fake.fault("close_1011")
        time.sleep(pause)
        for app in apps:
            upstream = get_service(app).upstream
            if upstream is not None:
                upstream.rotate()
        if n == 1:
            fake.fault("garbage_burst")


def finish(fake: FakeExchange, apps: list[Flask], flow: TradeFlow) -> None:
    """Stop trading, let a last trade close every candle, wait until the holes are healed."""
    flow.stop()
    time.sleep(1.05 - time.time() % 1.0)  # past the last 1 s candle: the next trade closes it
    flow.step()
    flow.step()
    wait_until(lambda: delivered(fake, apps), 5.0, "the last trades")  # any hole they reveal is queued
    wait_until(lambda: settled(apps), 30.0, "the holes healed")
    time.sleep(0.5)  # the last candle events published


@pytest.mark.unit
@pytest.mark.websocket
@pytest.mark.slow
def test_candles_equal_the_record_after_drops_closes_and_rotations(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    with trading(fake) as flow:
        time.sleep(1.5)  # trades before the service starts: its first trade reveals them
        app = make_app(**CANDLE_SETTINGS)
        wait_until(lambda: closed_count(app) >= 1, 10.0, "a closed candle")
        storm(fake, [app])
        finish(fake, [app], flow)
    stats = app.test_client().get("/stats").get_json()
    assert stats["candle_gaps_found"] >= 3  # the storm did leave holes
    assert stats["candle_gaps_healed"] >= 3
    assert stats["candle_gaps_unfilled"] == 0
    assert stats["candle_trades_healed"] > 0
    assert closed_count(app) >= 8
    assert differences(app, fake) == []


@pytest.mark.unit
@pytest.mark.websocket
@pytest.mark.slow
def test_a_hole_rest_cannot_fill_is_marked_and_counted(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    with trading(fake) as flow:
        app = make_app(**CANDLE_SETTINGS)
        wait_until(lambda: closed_count(app) >= 1, 10.0, "a closed candle")
        fake.rest_429(retry_after=0, count=None)  # REST answers nothing from now on
        fake.drop()
        time.sleep(1.5)
        wait_until(lambda: get_service(app).candles.builder.counters.gaps_found >= 1, 10.0, "a hole")
        flow.stop()
        wait_until(lambda: settled([app]), 30.0, "the hole given up")
    stats = app.test_client().get("/stats").get_json()
    assert stats["candle_gaps_unfilled"] >= 1
    assert stats["candle_trades_unfilled"] > 0
    incomplete = [c for s in SYMBOLS for c in served(app, s, "1s") if c["closed"] and not c["complete"]]
    assert incomplete  # marked, never hidden
    assert b"sardag_candle_gaps_total" in app.test_client().get("/metrics").data


@pytest.mark.integration
@pytest.mark.redis
@pytest.mark.websocket
@pytest.mark.slow
def test_every_worker_serves_the_record_after_a_storm_and_a_redis_outage(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    with PrivateRedis() as server, trading(fake) as flow:
        settings = {
            **CANDLE_SETTINGS,
            "REDIS_URL": server.url,
            "PRICE_STALE_SECONDS": 1.5,
            "WS_LEADER_LOCK_TTL_SECONDS": 1.0,
        }
        apps = [make_app(connect=False, **settings) for _ in range(2)]
        wait_until(lambda: roles(apps) == ["follower", "leader"], 10.0, "roles")
        wait_until(lambda: all(closed_count(a) >= 1 for a in apps), 10.0, "closed candles everywhere")
        storm(fake, apps, rounds=2)
        server.stop()
        wait_until(lambda: all(get_service(a).role == "solo" for a in apps), 5.0, "both apps solo")
        time.sleep(2.0)
        fake.drop()  # a hole during the outage too
        time.sleep(1.0)
        server.start()
        wait_until(
            lambda: sorted(get_service(a).role for a in apps) == ["follower", "leader"], 10.0, "roles again"
        )
        storm(fake, apps, rounds=1)
        finish(fake, apps, flow)
        follower = next(a for a in apps if get_service(a).role == "follower")
        leader = next(a for a in apps if get_service(a).role == "leader")
        follower_rest = get_service(follower).candles.healer.requests
        time.sleep(1.0)
        for app in apps:
            assert differences(app, fake) == []
        for symbol in SYMBOLS:
            closed = [c for c in served(leader, symbol, "1s") if c["closed"]]
            assert [c for c in served(follower, symbol, "1s") if c["closed"]][-len(closed) :] == closed
        assert get_service(follower).candles.healer.requests == follower_rest  # a follower never asks REST


@pytest.mark.unit
@pytest.mark.websocket
@pytest.mark.slow
def test_history_comes_from_klines_and_a_restart_serves_the_same_candles(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    now = int(time.time() * 1000)
    minute = now - now % 60_000
    for n in range(600):  # the 10 minutes before this one, traded before the service starts
        fake.market.step("BTCUSDT", minute - 600_000 + n * 1000)
        fake.market.step("ETHUSDT", minute - 600_000 + n * 1000 + 500)
    settings = {**CANDLE_SETTINGS, "CANDLE_INTERVALS": ("1m",)}
    with trading(fake, rate=20) as flow:
        first = make_app(**settings)
        wait_until(lambda: settled([first]) and len(served(first, "BTCUSDT", "1m")) >= 11, 10.0, "history")
        sources = [c["source"] for c in served(first, "BTCUSDT", "1m")]
        assert sources[:10] == ["klines"] * 10
        assert sources[-1] == "trades"
        before = served(first, "BTCUSDT", "1m")[:10]
        get_service(first).stop()  # a restart: the next process starts from nothing
        second = make_app(**settings)
        wait_until(lambda: settled([second]) and len(served(second, "BTCUSDT", "1m")) >= 11, 10.0, "history")
        assert served(second, "BTCUSDT", "1m")[:10] == before
        finish(fake, [second], flow)
    assert differences(second, fake) == []
    rebuilt = next(c for c in served(second, "BTCUSDT", "1m") if c["source"] == "trades")
    record = fake.market.record.all("BTCUSDT")
    # rebuilt from its minute's open: its first trade is the exchange's first in that minute
    assert rebuilt["first_agg_id"] == next(t.agg_id for t in record if t.time_ms >= rebuilt["open_time"])
    assert rebuilt["complete"] or rebuilt["closed"]  # closed and the newest: no later trade yet


@pytest.mark.unit
@pytest.mark.websocket
@pytest.mark.slow
def test_bad_trade_frames_are_counted_and_dropped_never_applied(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    app = make_app(**CANDLE_SETTINGS)
    with trading(fake, rate=40) as flow:
        wait_until(lambda: closed_count(app) >= 1, 10.0, "a closed candle")
        newest = fake.market.record.last("BTCUSDT")
        assert newest is not None
        base = {**newest.event(), "p": "1.5", "q": "1"}
        bad = [
            {**base, "p": "0"},
            {**base, "q": "1e300"},
            {**base, "a": None},
            {**base, "f": 9, "l": 3},
            {**base, "a": 1},  # backwards: long applied
            {**base, "a": newest.agg_id},  # a repeat of an applied id, another price
        ]
        for payload in bad:
            fake.send(payload, stream="btcusdt@aggTrade")
        fake.send('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","p":', None)
        time.sleep(0.5)
        finish(fake, [app], flow)
    stats = app.test_client().get("/stats").get_json()
    assert stats["candle_trades_dropped"]["malformed"] == 5
    # the two repeated ids: dropped by the dedup (it remembers them) or, past its window, by the builder
    dropped = stats["duplicates_dropped"] + sum(stats["candle_trades_dropped"].values()) - 5
    assert dropped >= 2
    assert get_service(app).alive()
    assert differences(app, fake) == []  # none of them reached a candle
