"""One copy of each update reaches the book, and an older one never overwrites a newer one."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from flask import Flask
from websocket_streaming import get_service
from websocket_streaming.dedup import TwinFrames, UpdateFilter
from websocket_streaming.parser import PriceUpdate

pytestmark = pytest.mark.unit


def trade(trade_id: int, when: int, symbol: str = "BTCUSDT", kind: str = "trade") -> PriceUpdate:
    return PriceUpdate(symbol, kind, when, price=Decimal(trade_id), update_id=trade_id)


def ticker(when: int, symbol: str = "BTCUSDT") -> PriceUpdate:
    return PriceUpdate(symbol, "24hrTicker", when, price=Decimal(1), update_id=7)


def test_trades_pass_once_each_whichever_connection_is_first() -> None:
    seen = UpdateFilter()
    a_side = [seen.admit("btcusdt@trade", trade(n, 1000 + n)) for n in (1, 2, 3)]
    b_side = [seen.admit("btcusdt@trade", trade(n, 1000 + n)) for n in (1, 2, 3, 4)]
    assert a_side == [True, True, True]
    assert b_side == [False, False, False, True]
    assert seen.duplicates == 3


def test_an_older_trade_no_connection_delivered_yet_passes_once() -> None:
    seen = UpdateFilter()
    assert seen.admit("btcusdt@aggTrade", trade(10, 1010, kind="aggTrade"))  # B, just opened
    assert seen.admit("btcusdt@aggTrade", trade(9, 1009, kind="aggTrade"))  # A, a moment behind
    assert not seen.admit("btcusdt@aggTrade", trade(9, 1009, kind="aggTrade"))  # B never had it; A's twin
    assert (seen.late, seen.duplicates) == (1, 1)


def test_ticker_states_are_known_by_event_time_and_an_older_one_is_dropped() -> None:
    seen = UpdateFilter()
    assert seen.admit("btcusdt@ticker", ticker(2000))
    assert not seen.admit("btcusdt@ticker", ticker(2000))  # same last trade id 7 on both: still one
    assert seen.admit("btcusdt@ticker", ticker(3000))  # same `L`, later state: news
    assert not seen.admit("btcusdt@ticker", ticker(2500))  # older than the state applied


def test_streams_and_symbols_are_told_apart() -> None:
    seen = UpdateFilter()
    assert seen.admit("btcusdt@trade", trade(5, 1))
    assert seen.admit("ethusdt@trade", trade(5, 1, symbol="ETHUSDT"))
    assert seen.admit("btcusdt@aggTrade", trade(5, 1, kind="aggTrade"))
    kline = PriceUpdate("BTCUSDT", "kline", 1000, price=Decimal(1))
    assert seen.admit("btcusdt@kline_1m", kline)
    assert seen.admit("btcusdt@kline_5m", kline)  # same event time, another interval
    assert seen.admit("!miniTicker@arr", PriceUpdate("BTCUSDT", "24hrMiniTicker", 1000, price=Decimal(1)))
    assert seen.admit("!miniTicker@arr", PriceUpdate("ETHUSDT", "24hrMiniTicker", 1000, price=Decimal(1)))


def test_updates_without_identity_are_never_dropped() -> None:
    seen = UpdateFilter()
    book_ticker = PriceUpdate("BTCUSDT", "bookTicker", None, bid=Decimal(1), ask=Decimal(2))
    assert seen.admit("btcusdt@bookTicker", book_ticker)
    assert seen.admit("btcusdt@bookTicker", book_ticker)


def test_a_late_twin_beyond_the_window_is_let_through_rather_than_remembered_forever() -> None:
    seen = UpdateFilter(window=4)
    for n in range(1, 11):
        assert seen.admit("btcusdt@trade", trade(n, n))
    assert not seen.admit("btcusdt@trade", trade(8, 8))
    assert seen.admit("btcusdt@trade", trade(2, 2))  # forgotten: memory stays bounded


def test_a_byte_equal_frame_from_the_other_connection_is_its_twin_once() -> None:
    twins = TwinFrames()
    twins.remember(b"frame-1", 1, "trade")
    assert twins.twin_of(b"frame-1", 1) is None  # the same connection again: not a twin
    assert twins.twin_of(b"frame-1", 2) == "trade"
    assert twins.twin_of(b"frame-1", 2) is None  # forgotten once matched
    assert twins.skipped == 1


def test_twin_frames_forget_the_oldest_past_the_window() -> None:
    twins = TwinFrames(window=2)
    for n in range(3):
        twins.remember(b"frame-%d" % n, 1, "trade")
    assert twins.twin_of(b"frame-0", 2) is None
    assert twins.twin_of(b"frame-2", 2) == "trade"


def frame(stream: str, data: dict[str, object]) -> bytes:
    return json.dumps({"stream": stream, "data": data}).encode()


def trade_frame(trade_id: int, when: int, price: str) -> bytes:
    event = {"e": "trade", "E": when, "s": "BTCUSDT", "t": trade_id, "p": price, "q": "1", "T": when}
    return frame("btcusdt@trade", event)


def ticker_frame(when: int, last: str, bid: str) -> bytes:
    data = {"e": "24hrTicker", "E": when, "s": "BTCUSDT", "c": last, "o": "9", "h": "30", "l": "8"}
    data.update(v="5", b=bid, a="30", P="1.0", L=1)
    return frame("btcusdt@ticker", data)


def test_the_twin_frame_of_another_connection_changes_nothing(idle_app: Flask) -> None:
    service = get_service(idle_app)
    service.handle_frame(trade_frame(1, 1000, "10.5"), 1.0)
    seq = service.book.seq
    service.handle_frame(trade_frame(1, 1000, "10.5"), 2.0)
    assert service.book.seq == seq  # nothing applied, nothing published
    assert service.book.get("BTCUSDT").received_at == 1.0  # type: ignore[union-attr]
    assert service.summary()["duplicates_dropped"] == 1


def test_an_older_price_never_overwrites_a_newer_one(idle_app: Flask) -> None:
    service = get_service(idle_app)
    book = service.book
    service.handle_frame(trade_frame(2, 2000, "20.5"), 1.0)
    service.handle_frame(trade_frame(1, 1000, "10.5"), 2.0)  # older, never delivered before: news
    assert book.get("BTCUSDT").price == Decimal("20.5")  # type: ignore[union-attr]
    service.handle_frame(ticker_frame(3000, "21.5", "21.0"), 3.0)
    service.handle_frame(ticker_frame(2500, "17.5", "17.0"), 4.0)  # an older state: dropped
    record = book.get("BTCUSDT")
    assert record is not None
    assert (record.price, record.bid) == (Decimal("21.5"), Decimal("21.0"))
    _, records, _ = book.since(0)
    assert [r.event_time for r in records] == [2000, 1000, 3000]  # each applied update published once
    assert service.summary()["late_updates"] == 1


def test_a_twin_frame_is_counted_but_not_parsed_again(idle_app: Flask) -> None:
    service = get_service(idle_app)
    assert service.handle_frame(trade_frame(1, 1000, "10.5"), 1.0, 1) == "trade"
    assert service.handle_frame(trade_frame(1, 1000, "10.5"), 1.1, 2) == "trade"
    assert service.handle_frame(b"not json", 1.2, 1) is None
    summary = service.summary()
    assert (summary["twin_frames_skipped"], summary["duplicates_dropped"]) == (1, 0)
    assert summary["messages_by_type"] == {"trade": 2}
    assert summary["parse_errors"] == 1
    assert service.book.seq == 1


def quote_frame(update_id: int, bid: str, **extra: object) -> bytes:
    data = {"u": update_id, "s": "BTCUSDT", "b": bid, "B": "1.5", "a": "200.25", "A": "2.5", **extra}
    return frame("btcusdt@bookTicker", data)


def test_across_a_b_lines_an_older_quote_never_overwrites_a_newer_one(idle_app: Flask) -> None:
    service = get_service(idle_app)
    book = service.book
    assert service.handle_frame(quote_frame(11, "100.11"), 1.0, 1) == "bookTicker"  # line A is ahead
    service.handle_frame(quote_frame(10, "100.10"), 1.1, 2)  # line B delivers the older one late
    service.handle_frame(quote_frame(11, "100.11"), 1.2, 2)  # ... then its byte-equal twin
    service.handle_frame(quote_frame(11, "100.11", X=1), 1.3, 1)  # the same `u`, other bytes
    service.handle_frame(quote_frame(12, "100.12"), 1.4, 2)
    record = book.get("BTCUSDT")
    assert record is not None
    assert (record.bid, record.bid_qty, record.ask, record.ask_qty) == (
        Decimal("100.12"),
        Decimal("1.5"),
        Decimal("200.25"),
        Decimal("2.5"),
    )
    assert record.quote_id == 12
    _, records, _ = book.since(0)
    assert [r.quote_id for r in records] == [11, 12]  # each quote published once, in order
    summary = service.summary()
    assert summary["messages_by_type"] == {"bookTicker": 5}
    assert summary["twin_frames_skipped"] == 1
    assert summary["duplicates_dropped"] == 2  # the older quote and the same `u` in other bytes
    assert summary["unknown_fields"] == 1  # the frame with a field bookTicker does not document


@pytest.mark.parametrize(
    "bad",
    [
        {"b": "0"},
        {"a": "0.00000000"},
        {"B": "1e300"},
        {"A": "-1"},
        {"b": "NaN"},
        {"a": "Infinity"},
        {"b": 100.5},  # a JSON number: it would go through a float
        {"u": None},
        {"u": "13"},
        {"u": 1e30},
        {"s": "BTC/USDT"},
    ],
)
def test_a_corrupt_quote_is_counted_and_dropped_never_applied(idle_app: Flask, bad: dict[str, object]) -> None:
    service = get_service(idle_app)
    service.handle_frame(quote_frame(12, "100.12"), 1.0)
    assert service.handle_frame(quote_frame(13, "100.13", **bad), 2.0) is None
    record = service.book.get("BTCUSDT")
    assert record is not None
    assert (record.bid, record.quote_id, record.received_at) == (Decimal("100.12"), 12, 1.0)
    assert service.book.seq == 1
    assert service.summary()["parse_errors"] == 1


def test_a_frame_without_u_is_counted_and_dropped(idle_app: Flask) -> None:
    service = get_service(idle_app)
    data = {"s": "BTCUSDT", "b": "100.1", "B": "1", "a": "100.2", "A": "1"}
    assert service.handle_frame(frame("btcusdt@bookTicker", data), 1.0) is None
    assert service.book.get("BTCUSDT") is None
    assert service.summary()["parse_errors"] == 1


def test_a_sound_quote_takes_the_fast_path_and_lands_as_the_parser_would_have_it(
    idle_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = get_service(idle_app)
    service.handle_frame(quote_frame(11, "100.11", X=1), 1.0)  # an undocumented field: the general parser
    monkeypatch.setattr("websocket_streaming.service.parse_frame", lambda _data: pytest.fail("parsed in full"))
    assert service.handle_frame(quote_frame(12, "100.12"), 2.0) == "bookTicker"
    assert service.handle_frame(quote_frame(12, "100.12"), 2.5) == "bookTicker"  # the same `u` again
    assert service.handle_frame(quote_frame(13, "100.13"), 3.0, 1) == "bookTicker"
    assert service.handle_frame(quote_frame(13, "100.13"), 3.1, 2) == "bookTicker"  # its twin, not parsed
    record = service.book.get("BTCUSDT")
    assert record is not None
    assert (record.bid, record.bid_qty, record.ask, record.ask_qty, record.quote_id, record.quote_at) == (
        Decimal("100.13"),
        Decimal("1.5"),
        Decimal("200.25"),
        Decimal("2.5"),
        13,
        3.0,
    )
    _, records, _ = service.book.since(0)
    assert [r.quote_id for r in records] == [11, 12, 13]
    summary = service.summary()
    assert summary["messages_by_type"] == {"bookTicker": 5}
    assert (summary["duplicates_dropped"], summary["twin_frames_skipped"], summary["unknown_fields"]) == (
        1,
        1,
        1,
    )
    assert summary["parse_errors"] == 0
    assert service.watch.seen["btcusdt@bookTicker"] == 3.0
