"""Candles from aggregate trades: the builder, its gaps, the REST shapes, /candles' validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fake_exchange import FakeExchange
from fake_exchange import trades as fake_trades
from fake_exchange.rest import handle_rest
from fake_exchange.trades import TradeRecord, kline_row
from flask import Flask
from websocket_streaming import create_app, get_service
from websocket_streaming.candles import (
    CandleBuilder,
    Coverage,
    Trade,
    kline_candle,
    next_open_time,
    open_time_of,
    parse_intervals,
)
from websocket_streaming.parser import ParseError, parse_frame
from websocket_streaming.trades_gap import RestBudget, rest_trade

from shared.config import ConfigError

from .conftest import app_config

pytestmark = pytest.mark.unit
MINUTE = 60_000
T0 = 1_795_514_400_000  # a whole hour


def trade(agg_id: int, price: str, qty: str = "1", at: int = T0, count: int = 1) -> Trade:
    return Trade("BTCUSDT", agg_id, Decimal(price), Decimal(qty), at, count)


def builder(*intervals: str, keep: int = 100) -> CandleBuilder:
    """A builder whose clock stays at the newest trade: a candle closes when a later one trades."""
    made = CandleBuilder(("BTCUSDT", "ETHUSDT"), intervals or ("1m", "5m", "1h"), keep)
    made.clock = lambda: max(T0, made.newest_time("BTCUSDT"))
    return made


def test_a_candle_holds_exact_ohlcv_counts_and_ids() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 9)
    for n, (price, qty) in enumerate(
        [("100.10", "0.5"), ("101.00000001", "0.25"), ("99.9", "2"), ("100.2", "1")]
    ):
        b.live(trade(10 + n, price, qty, T0 + n * 1000, count=2))
    b.live(trade(14, "100", at=T0 + MINUTE))  # the next minute: the first one is closed
    first = b.query("BTCUSDT", "1m", 10)[0]
    assert first == {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open_time": T0,
        "close_time": T0 + MINUTE - 1,
        "open": "100.10",
        "high": "101.00000001",
        "low": "99.9",
        "close": "100.2",
        "volume": "3.75",
        "quote_volume": "375.3000000025",  # 50.05 + 25.2500000025 + 199.8 + 100.2
        "trades": 8,
        "first_agg_id": 10,
        "last_agg_id": 13,
        "closed": True,
        "complete": True,
        "source": "trades",
    }


def test_the_open_candle_is_served_last_and_marked() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 0)
    b.live(trade(1, "1", at=T0))
    b.live(trade(2, "2", at=T0 + MINUTE))
    candles = b.query("BTCUSDT", "1m", 10)
    assert [c["open_time"] for c in candles] == [T0, T0 + MINUTE]
    assert [c["closed"] for c in candles] == [True, False]
    assert candles[-1]["complete"] is True


def test_a_hole_makes_its_candles_incomplete_until_it_is_healed_in_any_order() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 0)
    assert b.live(trade(1, "10", at=T0)) is None
    assert b.live(trade(2, "11", at=T0 + 1)) is None
    assert b.live(trade(6, "15", at=T0 + MINUTE + 5)) == (3, 5)
    b.live(trade(7, "16", at=T0 + 2 * MINUTE))
    assert [c["complete"] for c in b.query("BTCUSDT", "1m", 10)] == [False, False, True]
    for n, price, at in [(5, "14", T0 + MINUTE + 1), (3, "12", T0 + 2), (4, "13", T0 + MINUTE)]:
        assert b.heal(trade(n, price, at=at))
    first, second, _ = b.query("BTCUSDT", "1m", 10)
    assert (first["open"], first["close"], first["last_agg_id"], first["complete"]) == ("10", "12", 3, True)
    assert (second["open"], second["close"], second["first_agg_id"], second["complete"]) == (
        "13",
        "15",
        4,
        True,
    )
    assert b.missing("BTCUSDT", 1, 7) == []


def test_a_hole_rest_cannot_fill_stays_marked_and_is_counted() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 0)
    b.live(trade(1, "10", at=T0))
    b.live(trade(5, "10", at=T0 + 2 * MINUTE))
    b.heal(trade(2, "10", at=T0 + 1))
    b.gap_done(sum(hi - lo + 1 for lo, hi in b.missing("BTCUSDT", 2, 4)))
    b.live(trade(6, "10", at=T0 + 3 * MINUTE))
    served = b.query("BTCUSDT", "1m", 10)
    assert [c["complete"] for c in served if c["trades"]] == [False, False, True]
    # the minute with no trade known: ids 3 and 4 may lie in it, so it is not complete either
    assert [(c["open_time"], c["trades"], c["complete"]) for c in served if not c["trades"]] == [
        (T0 + MINUTE, 0, False)
    ]
    assert (b.counters.gaps_found, b.counters.gaps_unfilled, b.counters.unfilled_trades) == (1, 1, 2)


def test_ids_going_backwards_or_repeated_are_counted_and_never_applied() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 99)
    for n in range(100, 104):
        b.live(trade(n, "10", at=T0 + n))
    b.live(trade(102, "99999", at=T0 + 102))  # a twin the dedup let through
    b.live(trade(50, "99999", at=T0))  # far below anything applied
    candle = b.query("BTCUSDT", "1m", 1)[0]
    assert (candle["high"], candle["trades"]) == ("10", 4)
    assert b.counters.dropped == {"duplicate": 1, "backwards": 1}


def test_the_first_trade_reveals_what_came_before_it() -> None:
    b = builder("1m")
    assert b.live(trade(500, "1", at=T0)) == (0, 499)
    assert b.query("BTCUSDT", "1m", 1)[0]["complete"] is False  # not known what preceded it
    b.mark_before("BTCUSDT", 499)
    assert b.query("BTCUSDT", "1m", 1)[0]["complete"] is True


def test_memory_is_bounded_per_symbol_and_interval() -> None:
    b = builder("1m", "5m", keep=10)
    b.mark_before("BTCUSDT", 0)
    for n in range(1, 101):
        b.live(trade(n, "1", at=T0 + n * MINUTE))
    assert len(b.query("BTCUSDT", "1m", 1000)) == 10
    assert b.held() == 10 + 10
    b.prune()
    assert len(b.coverage_ranges("BTCUSDT")) == 1
    b.heal(trade(1, "5", at=T0 + MINUTE))  # older than every candle held: not a candle again
    assert b.query("BTCUSDT", "1m", 1000)[0]["open_time"] == T0 + 91 * MINUTE


def test_limit_and_until_pick_the_newest_candles_before_until() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 0)
    for n in range(1, 6):
        b.live(trade(n, "1", at=T0 + n * MINUTE))
    assert [c["first_agg_id"] for c in b.query("BTCUSDT", "1m", 2)] == [4, 5]
    assert [c["first_agg_id"] for c in b.query("BTCUSDT", "1m", 2, until=T0 + 4 * MINUTE)] == [2, 3]


def test_history_from_klines_fills_only_before_the_trades() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 9)
    b.live(trade(10, "7", at=T0 + 2 * MINUTE))
    rows = [kline_row(T0 + n * MINUTE, MINUTE, TradeRecord_trades(n)) for n in range(3)]
    stored = b.load_history([kline_candle("BTCUSDT", "1m", r) for r in rows], before=T0 + 2 * MINUTE)
    assert stored == 2
    candles = b.query("BTCUSDT", "1m", 10)
    assert [(c["source"], c["complete"], c["first_agg_id"]) for c in candles] == [
        ("klines", True, None),
        ("klines", True, None),
        ("trades", True, 10),
    ]
    assert (candles[0]["volume"], candles[0]["trades"]) == ("3.00000000", 3)


def TradeRecord_trades(n: int) -> list:
    record = TradeRecord()
    return [record.add("BTCUSDT", Decimal("5"), Decimal("1"), T0 + n * MINUTE + i, True) for i in range(3)]


def test_a_follower_adopts_the_leaders_candles_and_coverage() -> None:
    leader, follower = builder("1m"), builder("1m")
    leader.mark_before("BTCUSDT", 0)
    for n in range(1, 4):
        leader.live(trade(n, str(n), at=T0 + n * 30_000))
    follower.adopt(json.loads(json.dumps(leader.export(changed_only=False))))
    assert follower.query("BTCUSDT", "1m", 10) == leader.query("BTCUSDT", "1m", 10)
    assert follower.coverage_ranges("BTCUSDT") == [(0, 3)]


def test_coverage_merges_and_reports_what_is_missing() -> None:
    c = Coverage([(1, 3), (7, 9)])
    c.add(4)
    c.add_range(6, 6)
    assert c.ranges == [[1, 4], [6, 9]]
    assert c.missing(0, 12) == [(0, 0), (5, 5), (10, 12)]
    c.add(5)
    assert c.covers(1, 9)
    assert not c.covers(0, 9)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1m,5m,1h", ("1m", "5m", "1h")),
        ("1h, 1m", ("1m", "1h")),
        ("1d", ("1d",)),
        ("1M,1w,3d,1d", ("1d", "3d", "1w", "1M")),
    ],
)
def test_intervals_parse_sorted(value: str, expected: tuple[str, ...]) -> None:
    assert parse_intervals(value) == expected


def utc_ms(text: str) -> int:
    """Epoch ms of an ISO 8601 UTC date-time."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("interval", "moment", "opens", "next_opens"),
    [
        # 1w: Monday 00:00 UTC (2026-11-23 is a Monday; 2026-11-29 a Sunday)
        ("1w", "2026-11-29T23:59:59.999", "2026-11-23T00:00:00", "2026-11-30T00:00:00"),
        ("1w", "2026-11-30T00:00:00", "2026-11-30T00:00:00", "2026-12-07T00:00:00"),
        ("1w", "1970-01-01T00:00:00", "1969-12-29T00:00:00", "1970-01-05T00:00:00"),
        # 1M: calendar months, 28 to 31 days, across a year's end and a leap day
        ("1M", "2026-12-31T23:59:59.999", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("1M", "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
        ("1M", "2027-02-10T00:00:00", "2027-02-01T00:00:00", "2027-03-01T00:00:00"),
        # 3d: every third day from 1970-01-01, as Binance's 3d klines open
        ("3d", "1970-01-03T23:59:59.999", "1970-01-01T00:00:00", "1970-01-04T00:00:00"),
        ("3d", "2026-11-24T10:00:00", "2026-11-24T00:00:00", "2026-11-27T00:00:00"),
        ("3d", "2026-11-23T23:59:59.999", "2026-11-21T00:00:00", "2026-11-24T00:00:00"),
        ("1d", "2026-11-24T10:00:00", "2026-11-24T00:00:00", "2026-11-25T00:00:00"),
    ],
)
def test_long_intervals_open_where_binance_opens_them(
    interval: str, moment: str, opens: str, next_opens: str
) -> None:
    assert open_time_of(interval, utc_ms(moment)) == utc_ms(opens)
    assert next_open_time(interval, utc_ms(opens)) == utc_ms(next_opens)
    # the fake exchange (its own copy: it must not import the service) agrees
    assert fake_trades.open_time_of(interval, utc_ms(moment)) == utc_ms(opens)
    assert fake_trades.next_open_time(interval, utc_ms(opens)) == utc_ms(next_opens)


def test_a_week_is_the_row_binances_klines_reference_shows() -> None:
    # GET /api/v3/klines' documented row: open 1499040000000 (Monday 2017-07-03), close 1499644799999
    assert open_time_of("1w", 1_499_300_000_000) == 1_499_040_000_000
    assert next_open_time("1w", 1_499_040_000_000) - 1 == 1_499_644_799_999


def test_candles_at_3d_1w_and_1m_span_their_calendar_and_match_the_fakes_klines() -> None:
    b = builder("1d", "3d", "1w", "1M")
    record = TradeRecord()
    b.mark_before("BTCUSDT", 0)
    moments = ["2027-02-27T10:00:00", "2027-02-28T23:59:59.999", "2027-03-01T00:00:00", "2027-03-02T08:00:00"]
    for n, moment in enumerate(moments):
        made = record.add("BTCUSDT", Decimal(f"{10 + n}.5"), Decimal("1"), utc_ms(moment), False)
        b.live(Trade("BTCUSDT", made.agg_id, made.price, made.qty, made.time_ms))
    months = b.query("BTCUSDT", "1M", 10)
    assert [(c["open_time"], c["close_time"], c["trades"]) for c in months] == [
        (utc_ms("2027-02-01T00:00:00"), utc_ms("2027-03-01T00:00:00") - 1, 2),
        (utc_ms("2027-03-01T00:00:00"), utc_ms("2027-04-01T00:00:00") - 1, 2),
    ]
    weeks = b.query("BTCUSDT", "1w", 10)  # Monday 2027-02-22 to Sunday 2027-02-28, then from 03-01
    assert [(c["open_time"], c["open"], c["close"]) for c in weeks] == [
        (utc_ms("2027-02-22T00:00:00"), "10.5", "11.5"),
        (utc_ms("2027-03-01T00:00:00"), "12.5", "13.5"),
    ]
    for interval in ("1d", "3d", "1w", "1M"):
        rows = record.klines("BTCUSDT", interval, None, None, 10)
        built = b.query("BTCUSDT", interval, 10)
        assert [kline_candle("BTCUSDT", interval, r).to_dict(True, True)["close_time"] for r in rows] == [
            c["close_time"] for c in built
        ]
        assert [(r[0], r[1], r[2], r[3], r[4], r[8]) for r in rows] == [
            (
                c["open_time"],
                f"{Decimal(c['open']):.8f}",
                f"{Decimal(c['high']):.8f}",
                f"{Decimal(c['low']):.8f}",
                f"{Decimal(c['close']):.8f}",
                c["trades"],
            )
            for c in built
        ]


def test_an_interval_without_trades_is_an_empty_candle_at_the_close_before() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 0)
    b.live(trade(1, "10.5", "2", at=T0 + 5_000))
    b.live(trade(2, "11.25", at=T0 + 10_000))
    b.live(trade(3, "12", at=T0 + 3 * MINUTE + 1))  # minutes 1 and 2 had no trade
    served = b.query("BTCUSDT", "1m", 10)
    assert [c["open_time"] for c in served] == [T0 + n * MINUTE for n in range(4)]
    for empty in served[1:3]:
        fields = {k: empty[k] for k in ("open", "high", "low", "close", "volume", "quote_volume", "trades")}
        assert fields == {
            "open": "11.25",
            "high": "11.25",
            "low": "11.25",
            "close": "11.25",
            "volume": "0",
            "quote_volume": "0",
            "trades": 0,
        }
        assert (empty["first_agg_id"], empty["last_agg_id"]) == (None, None)
        assert empty["closed"]
        assert empty["complete"]  # ids 2 and 3 are consecutive: nothing was in it
    record = TradeRecord()  # the fake's klines list the same empty minutes, the same way
    for price, qty, at in [("10.5", "2", 5_000), ("11.25", "1", 10_000), ("12", "1", 3 * MINUTE + 1)]:
        record.add("BTCUSDT", Decimal(price), Decimal(qty), T0 + at, False)
    rows = record.klines("BTCUSDT", "1m", None, None, 10)
    assert [(r[0], r[1], r[4], r[5], r[8]) for r in rows[1:3]] == [
        (T0 + n * MINUTE, "11.25000000", "11.25000000", "0.00000000", 0) for n in (1, 2)
    ]


def test_an_empty_candle_waits_for_the_hole_before_it_and_takes_a_healed_trade() -> None:
    b = builder("1m")
    b.mark_before("BTCUSDT", 0)
    b.live(trade(1, "10", at=T0))
    b.live(trade(4, "13", at=T0 + 3 * MINUTE))  # ids 2 and 3 missing: they may lie in minutes 1 and 2
    assert [c["complete"] for c in b.query("BTCUSDT", "1m", 10)[1:3]] == [False, False]
    b.heal(trade(2, "11", "3", at=T0 + MINUTE + 7))  # minute 1 was not empty after all
    b.heal(trade(3, "9", at=T0 + MINUTE + 9))
    served = b.query("BTCUSDT", "1m", 10)
    assert [(c["open"], c["high"], c["low"], c["close"], c["trades"]) for c in served] == [
        ("10", "10", "10", "10", 1),
        ("11", "11", "9", "9", 2),
        ("9", "9", "9", "9", 0),  # still empty: now at the healed minute's close
        ("13", "13", "13", "13", 1),
    ]
    assert [c["complete"] for c in served[:3]] == [True, True, True]
    assert (served[1]["first_agg_id"], served[1]["last_agg_id"]) == (2, 3)


def test_empty_candles_are_bounded_by_the_memory_bound() -> None:
    b = builder("1m", keep=5)
    b.mark_before("BTCUSDT", 0)
    b.live(trade(1, "10", at=T0))
    b.live(trade(2, "11", at=T0 + 1000 * MINUTE))  # a quiet day: not a thousand candles
    served = b.query("BTCUSDT", "1m", 100)
    assert [c["open_time"] for c in served] == [T0 + n * MINUTE for n in range(996, 1001)]
    assert b.held() == 5


def test_a_bad_interval_setting_is_one_line_naming_the_variable(fake: FakeExchange) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(app_config(fake, CANDLE_INTERVALS="1m,7m"))
    assert "CANDLE_INTERVALS" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [
        {"p": "0", "q": "1"},
        {"p": "1", "q": "1e300"},
        {"p": "1", "q": "1", "a": -1},
        {"p": "1", "q": "1", "f": 7, "l": 5},
        {"p": "1", "q": "1", "T": "soon"},
        {"p": "NaN", "q": "1"},
    ],
)
def test_malformed_agg_trades_are_refused(data: dict) -> None:
    event = {
        "e": "aggTrade",
        "E": 1,
        "s": "BTCUSDT",
        "a": 5,
        "p": "1",
        "q": "1",
        "f": 1,
        "l": 1,
        "T": 1,
        **data,
    }
    with pytest.raises(ParseError):
        parse_frame(json.dumps(event))
    with pytest.raises(ParseError):
        rest_trade("BTCUSDT", {k: v for k, v in event.items() if k not in "eEs"})


def test_an_agg_trade_carries_quantity_time_and_trade_count() -> None:
    frame = parse_frame('{"e":"aggTrade","E":2,"s":"BTCUSDT","a":5,"p":"1.5","q":"0.25","f":10,"l":12,"T":1}')
    update = frame.updates[0]
    assert (update.quantity, update.trade_time, update.trade_count) == (Decimal("0.25"), 1, 3)


def test_the_budget_waits_once_a_minute_of_weight_is_spent() -> None:
    now = [0.0]
    budget = RestBudget(10, clock=lambda: now[0])
    for _ in range(2):
        assert budget.wait_for(4) == 0
        budget.spend(4)
    assert budget.wait_for(4) == pytest.approx(60.0)
    now[0] = 60.0
    assert budget.wait_for(4) == 0


def test_the_fake_serves_agg_trades_and_klines_in_binances_shapes() -> None:
    fake = FakeExchange(symbols=("BTCUSDT",), seed=1)
    made = [fake.market.step("BTCUSDT", T0 + n * 20_000) for n in range(6)]
    page = handle_rest(fake.market, "/api/v3/aggTrades?symbol=BTCUSDT&fromId=2&limit=3")
    assert page.headers["X-MBX-USED-WEIGHT-1M"] == "4"
    assert [row["a"] for row in page.body] == [2, 3, 4]
    assert set(page.body[0]) == {"a", "p", "q", "f", "l", "T", "m", "M"}
    assert page.body[1]["f"] == page.body[0]["l"] + 1  # the trades they aggregate are consecutive too
    klines = handle_rest(fake.market, "/api/v3/klines?symbol=BTCUSDT&interval=1m")
    assert klines.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    assert [row[0] for row in klines.body] == [T0, T0 + MINUTE]
    assert (len(klines.body[0]), klines.body[0][6]) == (12, T0 + MINUTE - 1)
    assert klines.body[0][8] == sum(t.last_trade_id - t.first_trade_id + 1 for t in made[:3])
    for target, code in [
        ("/api/v3/klines?symbol=BTCUSDT&interval=7m", -1120),
        ("/api/v3/klines?interval=1m", -1102),
        ("/api/v3/aggTrades?symbol=BTCUSDT&limit=0", -1130),
        ("/api/v3/aggTrades?symbol=BTCUSDT&startTime=0&endTime=3600001", -1127),
        ("/api/v3/aggTrades?symbol=NOPE", -1121),
    ]:
        assert handle_rest(fake.market, target).body["code"] == code


# ---- GET /candles/<symbol>: validation -------------------------------------------------
@pytest.mark.api
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("interval=7m", "interval"),
        ("interval=1d", "interval"),
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=1e2", "limit"),
        ("until=yesterday", "until"),
        ("until=2026-11-24T10:00:00", "until"),
        ("until=-5", "until"),
        ("until=1969-12-31T23:59:59Z", "until"),
        ("until=12345678901234567", "until"),
        ("interval=1m&interval=5m", "interval"),
        ("limit=1&limit=2", "limit"),
        ("until=1&until=2", "until"),
        ("intervals=1m", "intervals"),
    ],
)
def test_candles_refuse_bad_parameters_naming_the_field(idle_app: Flask, query: str, field: str) -> None:
    answer = idle_app.test_client().get(f"/candles/BTCUSDT?{query}")
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["error"] == "validation_error"
    assert [d["field"] for d in body["details"]] == [field]


@pytest.mark.api
@pytest.mark.parametrize(
    ("query", "field"), [("events=price,bar", "events"), ("events=candle,candle", "events")]
)
def test_stream_refuses_unknown_or_repeated_event_types(idle_app: Flask, query: str, field: str) -> None:
    answer = idle_app.test_client().get(f"/stream?{query}")
    assert answer.status_code == 400
    assert [d["field"] for d in answer.get_json()["details"]] == [field]


@pytest.mark.api
def test_candles_answer_404_for_an_untracked_symbol_and_400_for_a_malformed_one(idle_app: Flask) -> None:
    assert idle_app.test_client().get("/candles/DOGEUSDT").status_code == 404
    assert idle_app.test_client().get("/candles/BTC-USDT").get_json()["details"][0]["field"] == "symbol"


@pytest.mark.api
def test_candles_are_served_as_exact_json_numbers(idle_app: Flask) -> None:
    b = get_service(idle_app).candles.builder
    b.mark_before("BTCUSDT", 0)
    b.live(trade(1, "43250.10000001", "0.00100000", at=T0))
    for query in ("", "?interval=1m&limit=500", f"?until={T0 + 1}", "?until=2026-11-24T10:00:00Z&limit=1"):
        answer = idle_app.test_client().get(f"/candles/btcusdt{query}")
        assert answer.status_code == 200, answer.data
    answer = idle_app.test_client().get("/candles/BTCUSDT?interval=5m")
    assert b'"open":43250.10000001,' in answer.data
    assert b'"volume":0.00100000,' in answer.data
    body = answer.get_json()
    assert (body["symbol"], body["interval"], len(body["candles"])) == ("BTCUSDT", "5m", 1)
    assert idle_app.test_client().get(f"/candles/BTCUSDT?until={T0}").get_json()["candles"] == []


@pytest.mark.api
def test_stats_show_the_candle_memory_bound(idle_app: Flask) -> None:
    stats = idle_app.test_client().get("/stats").get_json()
    assert stats["candles_max"] == 500 * 3 * 4
    assert stats["candles_held"] == 0
    assert stats["candle_intervals"] == ["1m", "5m", "1h"]


def test_a_candle_exported_open_is_exported_again_once_the_clock_closes_it() -> None:
    b = builder("1m")
    now = [T0]
    b.clock = lambda: now[0]
    b.mark_before("BTCUSDT", 0)
    b.live(trade(1, "10", at=T0 + 5))
    assert [(c["open_time"], c["closed"]) for c in b.export(changed_only=True)["candles"]] == [(T0, False)]
    now[0] = T0 + 30_000
    assert b.export(changed_only=True)["candles"] == []  # still open, unchanged: nothing to say
    now[0] = T0 + MINUTE + 1_001  # past its end and the grace, no trade since
    assert [(c["open_time"], c["closed"]) for c in b.export(changed_only=True)["candles"]] == [(T0, True)]
    assert b.export(changed_only=True)["candles"] == []  # once
