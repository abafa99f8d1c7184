"""The frame parser: every documented shape, exact decimals, hostile input."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from websocket_streaming.parser import (
    BOOK_TICKER,
    MINI_TICKER_ARR,
    REPLY,
    SERVER_SHUTDOWN,
    UNKNOWN,
    ParseError,
    fast_quote,
    parse_frame,
    positive_dec,
    quantity,
)

pytestmark = pytest.mark.unit
FRAMES = Path(__file__).parent / "frames" / "binance-frames.jsonl"


def documented(line: int) -> str:
    """Line `line` (1-based) of the documented frames file."""
    return FRAMES.read_text().splitlines()[line - 1]


@pytest.mark.parametrize(
    ("line", "kind", "symbol", "price"),
    [
        (1, "trade", "BNBBTC", "0.001"),
        (2, "aggTrade", "BNBBTC", "0.001"),
        (3, "24hrMiniTicker", "BNBBTC", "0.0025"),
        (4, "24hrTicker", "BNBBTC", "0.0025"),
        (6, "kline", "BNBBTC", "0.0020"),
        (8, "24hrMiniTicker", "BNBBTC", "0.0025"),
        (13, "trade", "BTCUSDT", "36877.31000000"),
    ],
)
def test_documented_price_frames(line: int, kind: str, symbol: str, price: str) -> None:
    frame = parse_frame(documented(line))
    assert frame.kind == kind
    [update] = frame.updates
    assert update.symbol == symbol
    assert str(update.price) == price  # exact digits, trailing zeros kept


def test_ticker_carries_bid_ask_and_24h_fields() -> None:
    [u] = parse_frame(documented(4)).updates
    assert (u.bid, u.ask) == (Decimal("0.0024"), Decimal("0.0026"))
    assert (u.open_24h, u.high_24h, u.low_24h) == (Decimal("0.0010"), Decimal("0.0025"), Decimal("0.0010"))
    assert u.volume_24h == Decimal("10000")
    assert u.change_24h_percent == Decimal("250.00")


@pytest.mark.parametrize("line", [5, 14])
def test_book_ticker_has_no_event_type_or_time(line: int) -> None:
    frame = parse_frame(documented(line))
    assert frame.kind == BOOK_TICKER
    [u] = frame.updates
    assert u.price is None
    assert u.event_time is None
    assert u.bid is not None
    assert u.ask is not None
    assert u.bid <= u.ask


def test_mini_ticker_array_gives_one_update_per_element() -> None:
    two = json.loads(documented(7)) * 2
    two[1] = {**two[1], "s": "ETHUSDT", "c": "3000.5"}
    frame = parse_frame(json.dumps(two))
    assert frame.kind == MINI_TICKER_ARR
    assert [(u.symbol, str(u.price)) for u in frame.updates] == [("BNBBTC", "0.0025"), ("ETHUSDT", "3000.5")]


@pytest.mark.parametrize("line", [9, 10])
def test_server_shutdown_is_recognised_raw_and_combined(line: int) -> None:
    assert parse_frame(documented(line)).kind == SERVER_SHUTDOWN


@pytest.mark.parametrize("line", [11, 12])
def test_subscribe_replies_are_not_prices(line: int) -> None:
    frame = parse_frame(documented(line))
    assert frame.kind == REPLY
    assert frame.updates == []


def test_2023_trade_with_dropped_fields_parses_and_flags_unknown_fields() -> None:
    frame = parse_frame(documented(13))
    assert frame.unknown_fields
    assert frame.updates[0].update_id == 3274098620


def test_unknown_event_is_ignored_not_an_error() -> None:
    frame = parse_frame('{"stream":"x@y","data":{"e":"fooBar","E":1,"s":"BTCUSDT"}}')
    assert frame.kind == UNKNOWN
    assert frame.updates == []


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"e":"trade","E":1,"s":"BTCUSDT","p":"1"} trailing',
        "",
        b"\xff\xfe",
        "[1, 2]",
        '"a string"',
        '{"e":"trade","E":1,"s":"BTCUSDT"}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":1.5}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":"-1"}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":"NaN"}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":"Infinity"}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":"1e"}',
        '{"e":"trade","E":"soon","s":"BTCUSDT","p":"1"}',
        '{"e":"trade","E":1,"s":"BTC/USDT","p":"1"}',
        '{"e":"trade","E":1,"s":"' + "A" * 21 + '","p":"1"}',
        '{"e":"kline","E":1,"s":"BTCUSDT","k":[]}',
        '{"u":1,"s":"BTCUSDT","b":"1"}',
        '[{"e":"trade"}]',
        '{"stream":"a","data":[{"e":"24hrMiniTicker","s":"BTCUSDT"}]}',
    ],
)
def test_malformed_frames_raise_parse_error(text: str | bytes) -> None:
    with pytest.raises(ParseError):
        parse_frame(text)


def test_huge_nested_frame_is_a_parse_error_not_a_crash() -> None:
    with pytest.raises(ParseError):
        parse_frame("[" * 100_000 + "]" * 100_000)


def test_book_ticker_carries_sizes_and_update_id() -> None:
    [u] = parse_frame(documented(14)).updates
    assert (u.bid, u.bid_qty) == (Decimal("66526.00000000"), Decimal("0.18986000"))
    assert (u.ask, u.ask_qty) == (Decimal("66526.01000000"), Decimal("14.00805000"))
    assert u.update_id == 49065292445


BOOK = {"u": 7, "s": "BTCUSDT", "b": "100.1", "B": "2", "a": "100.2", "A": "3"}
AGG = {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 5, "p": "100.1", "q": "2", "f": 1, "l": 2, "T": 1}


@pytest.mark.parametrize(
    "event",
    [
        {k: v for k, v in BOOK.items() if k != "u"},  # no update id: cannot be ordered
        {**BOOK, "u": "7"},
        {**BOOK, "u": -1},
        {**BOOK, "b": "0"},
        {**BOOK, "a": "0.00000000"},
        {**BOOK, "B": "1e300"},
        {**BOOK, "A": "-1"},
        {k: v for k, v in BOOK.items() if k != "A"},
        {k: v for k, v in AGG.items() if k != "a"},
        {**AGG, "p": "0"},
        {**AGG, "q": "1e300"},
        {**AGG, "q": "NaN"},
        {**AGG, "a": 1.5},
    ],
)
def test_corrupt_book_ticker_and_agg_trade_frames_are_refused(event: dict) -> None:
    with pytest.raises(ParseError):
        parse_frame(json.dumps({"stream": "btcusdt@x", "data": event}))


HOSTILE_DECIMALS = [
    "100.5",
    "0.00000001",
    "1e5",
    "1E-3",
    " 7 ",
    "1_000",
    "\u0661\u0662",  # Arabic-Indic digits: Decimal reads them
    "0",
    "-0",
    "0.000",
    "-1",
    "NaN",
    "-NaN",
    "sNaN",
    "Infinity",
    "-inf",
    "1000000000000000",
    "1000000000000000.00000001",
    "1e300",
    "",
    "abc",
]


def field_checks(value: str, check: Callable[[object], Decimal]) -> Decimal | None:
    """What the field-by-field check makes of `value` (None: refused)."""
    try:
        return check(value)
    except ParseError:
        return None


@pytest.mark.parametrize("value", HOSTILE_DECIMALS)
@pytest.mark.parametrize(
    ("field", "check"), [("b", positive_dec), ("a", positive_dec), ("B", quantity), ("A", quantity)]
)
def test_a_quote_is_taken_or_refused_exactly_as_the_field_checks_say(
    field: str, check: Callable[[object], Decimal], value: str
) -> None:
    expected = field_checks(value, check)
    text = json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, field: value}})
    if expected is None:
        with pytest.raises(ParseError):
            parse_frame(text)
        return
    [update] = parse_frame(text).updates
    got = {"b": update.bid, "a": update.ask, "B": update.bid_qty, "A": update.ask_qty}[field]
    assert (str(got), got.as_tuple()) == (str(expected), expected.as_tuple())  # the very same digits


# Beside the hostile ones: numbers whose Decimal writes other digits than the text (a leading
# zero, 1E-7), the bounds of the fast path's shape, and forms Decimal reads but JSON peers do not.
MORE_DECIMALS = [
    "01.5",
    "00",
    "0.0000001",
    "0.000001",
    "0.00000100",
    "0.10000000",
    "90000.50000000",
    "999999999999999.999999999999999999",
    "99999999999999.5",
    "1000000000000000.0",
    "0.1234567890123456789",
    "5.",
    ".5",
    "+1",
    "1.0e2",
    "\uff11",  # a full-width digit
    "1.5 ",
    "1,5",
]


def fast_agrees(data: bytes) -> bool:
    """Whether `fast_quote` took `data`; when it did, `parse_frame` took it too, to the same
    stream, symbol, `u` and the very same decimals, with no undocumented field."""
    fields = fast_quote(data)
    if fields is None:
        return False
    frame = parse_frame(data)  # raises if the field checks refuse what the fast path took
    [update] = frame.updates
    stream, symbol, update_id, texts = fields
    assert (stream, symbol, update_id, frame.unknown_fields) == (
        frame.stream,
        update.symbol,
        update.update_id,
        False,
    )
    for text, exact in zip(texts, (update.bid, update.bid_qty, update.ask, update.ask_qty), strict=True):
        assert exact is not None
        assert (text, Decimal(text).as_tuple()) == (str(exact), exact.as_tuple())  # text is the Decimal
    return True


@pytest.mark.parametrize("value", HOSTILE_DECIMALS + MORE_DECIMALS)
@pytest.mark.parametrize("field", ["b", "B", "a", "A"])
def test_the_fast_path_takes_a_quote_only_where_the_field_checks_take_the_same(field: str, value: str) -> None:
    for separators in ((",", ":"), (", ", ": ")):  # as Binance writes it, and spaced
        fast_agrees(
            json.dumps(
                {"stream": "btcusdt@bookTicker", "data": {**BOOK, field: value}}, separators=separators
            ).encode()
        )


def test_the_fast_path_takes_the_usual_quote_whatever_the_key_order() -> None:
    usual = {
        "u": 400900217,
        "s": "BNBUSDT",
        "b": "25.35190000",
        "B": "31.21000000",
        "a": "25.36520000",
        "A": "40.66000000",
    }
    assert fast_agrees(json.dumps({"stream": "bnbusdt@bookTicker", "data": usual}).encode())
    backwards = dict(reversed(usual.items()))
    assert fast_agrees(json.dumps({"data": backwards, "stream": "bnbusdt@bookTicker"}).encode())
    assert fast_agrees(json.dumps({"stream": "x@bookTicker", "data": {**BOOK, "b": "0.000001"}}).encode())


@pytest.mark.parametrize(
    "data",
    [
        *(
            json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, "u": u}})
            for u in ("7", -1, 7.0, True, None, 1e3)
        ),
        *(
            json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, "u": u}})
            for u in (2**63 - 1, 2**63, 2**64 - 1, 2**64)
        ),
        *(
            json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, "s": s}})
            for s in ("btcusdt", "BTC/USDT", "B", "B" * 21, "\uff22TC")
        ),
        *(
            json.dumps({"stream": "btcusdt@bookTicker", "data": {k: v for k, v in BOOK.items() if k != gone}})
            for gone in BOOK
        ),
        *(json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, field: 100.5}}) for field in "bBaA"),
        json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, "X": 1}}),  # an undocumented field
        json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, "e": "bookTicker"}}),
        json.dumps({"stream": "btcusdt@bookTicker", "data": BOOK, "extra": 1}),
        json.dumps({"stream": 5, "data": BOOK}),
        json.dumps({"stream": "btcusdt@bookTicker", "data": [BOOK]}),
        json.dumps(BOOK),  # a raw payload: no stream name
        '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"100.1","B":"2","a":"100.2","A":"3","u":8}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"100.1","B":"2","a":"100.2","A":"3","u":null}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"\\u0031.5","B":"2","a":"100.2","A":"3"}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"\\ud800","B":"2","a":"100.2","A":"3"}}',
        '{"stream":"btcusdt@bookTicker","data":{"u":7,"s":"BTCUSDT","b":"1.5","B":"2","a":"100.2","A":"3"}} x',
        '{"stream":"btcusdt@bookTicker","data":{"u":NaN,"s":"BTCUSDT","b":"1.5","B":"2","a":"100.2","A":"3"}}',
    ],
)
def test_the_fast_path_agrees_with_the_parser_on_odd_frames(data: str) -> None:
    fast_agrees(data.encode())
    fast_agrees(data.encode()[:-3] + b"\xff\xfe}")  # invalid UTF-8 near the end


def test_a_book_ticker_with_an_undocumented_field_is_taken_and_flagged() -> None:
    frame = parse_frame(json.dumps({"stream": "btcusdt@bookTicker", "data": {**BOOK, "X": 1}}))
    assert frame.unknown_fields
    assert frame.updates[0].update_id == 7
    assert not parse_frame(json.dumps({"stream": "btcusdt@bookTicker", "data": BOOK})).unknown_fields
