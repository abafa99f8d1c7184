"""Binance spot frames to price updates: every documented event shape, prices kept exact."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated

import msgspec
import orjson

# Frame kinds as counted in `sardag_ws_messages_total{type}` and /stats.
TRADE = "trade"
AGG_TRADE = "aggTrade"
MINI_TICKER = "24hrMiniTicker"
TICKER = "24hrTicker"
BOOK_TICKER = "bookTicker"
KLINE = "kline"
MINI_TICKER_ARR = "miniTickerArr"
SERVER_SHUTDOWN = "serverShutdown"
REPLY = "reply"
UNKNOWN = "unknown"

KNOWN_FIELDS = {
    TRADE: frozenset("eEstpqTmM"),
    AGG_TRADE: frozenset("eEsapqflTmM"),
    MINI_TICKER: frozenset("eEscohlvq"),
    TICKER: frozenset("eEspPwxcQbBaAohlvqOCFLn"),
    BOOK_TICKER: frozenset("usbBaA"),
    KLINE: frozenset("eEsk"),
    SERVER_SHUTDOWN: frozenset("eE"),
}


class ParseError(ValueError):
    """A frame that is not JSON or not in any documented shape."""


@dataclass(slots=True)
class PriceUpdate:
    """The price fields one event carries; None where the event says nothing."""

    symbol: str
    kind: str
    event_time: int | None
    price: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    open_24h: Decimal | None = None
    high_24h: Decimal | None = None
    low_24h: Decimal | None = None
    volume_24h: Decimal | None = None
    change_24h_percent: Decimal | None = None
    update_id: int | None = None
    bid_qty: Decimal | None = None
    ask_qty: Decimal | None = None
    quantity: Decimal | None = None  # aggTrade: what candles add up
    trade_time: int | None = None  # aggTrade `T`
    trade_count: int = 1  # aggTrade: trades it aggregates (`l` - `f` + 1)


@dataclass(slots=True)
class Frame:
    """One parsed frame: its kind, the updates it carries, whether it had unknown fields and
    the combined-stream name it came on (None for a raw payload)."""

    kind: str
    updates: list[PriceUpdate]
    unknown_fields: bool = False
    stream: str | None = None


def dec(value: object) -> Decimal:
    """A Binance decimal string as an exact, finite, non-negative Decimal."""
    if type(value) is not str:
        raise ParseError(f"expected a decimal string, got {type(value).__name__}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ParseError(f"not a decimal: {value[:32]!r}") from None
    if not number.is_finite() or (number.is_signed() and number):
        raise ParseError(f"not a finite non-negative decimal: {value[:32]!r}")
    return number


MAX_QUANTITY = Decimal("1e15")  # far above any real order size; larger means a corrupt frame


def positive_dec(value: object) -> Decimal:
    """A price that must be above zero (a trade or best bid/ask at 0 is a corrupt frame)."""
    number = dec(value)
    if not number:
        raise ParseError("price of 0")
    return number


def quantity(value: object) -> Decimal:
    """A quantity: exact, non-negative and below MAX_QUANTITY."""
    number = dec(value)
    if number > MAX_QUANTITY:
        raise ParseError(f"quantity {value!s:.32} above {MAX_QUANTITY}")
    return number


def required_id(event: dict, name: str) -> int:
    """An integer id the event must carry (`u` of bookTicker, `a` of aggTrade)."""
    value = event.get(name)
    if type(value) is not int or value < 0:
        raise ParseError(f"missing or malformed id `{name}`")
    return value


def signed_dec(value: object) -> Decimal:
    """A decimal string that may be negative (a 24 h change)."""
    if type(value) is not str:
        raise ParseError("expected a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ParseError(f"not a decimal: {value[:32]!r}") from None
    if not number.is_finite():
        raise ParseError("not a finite decimal")
    return number


def _symbol(event: dict) -> str:
    symbol = event.get("s")
    if type(symbol) is not str or not (symbol.isascii() and symbol.isalnum()) or not 2 <= len(symbol) <= 20:
        raise ParseError("missing or malformed symbol `s`")
    return symbol.upper()


def _time(event: dict) -> int | None:
    value = event.get("E")
    if value is None:
        return None
    if type(value) is not int:
        raise ParseError("event time `E` is not an integer")
    return value


def _opt_int(value: object) -> int | None:
    return value if type(value) is int else None


def _trade(e: dict) -> PriceUpdate:
    return PriceUpdate(_symbol(e), TRADE, _time(e), price=dec(e["p"]), update_id=_opt_int(e.get("t")))


def _agg_trade(e: dict) -> PriceUpdate:
    """An aggTrade feeds the candles too: its ids, time, price and quantity must all be sound."""
    qty = quantity(e["q"])
    price, update_id = positive_dec(e["p"]), required_id(e, "a")
    first, last, when = required_id(e, "f"), required_id(e, "l"), required_id(e, "T")
    if last < first:
        raise ParseError("aggTrade with `l` before `f`")
    update = PriceUpdate(_symbol(e), AGG_TRADE, _time(e), price=price, update_id=update_id, quantity=qty)
    update.trade_time, update.trade_count = when, last - first + 1
    return update


def _mini_ticker(e: dict, kind: str = MINI_TICKER) -> PriceUpdate:
    return PriceUpdate(
        _symbol(e),
        kind,
        _time(e),
        price=dec(e["c"]),
        open_24h=dec(e["o"]),
        high_24h=dec(e["h"]),
        low_24h=dec(e["l"]),
        volume_24h=dec(e["v"]),
    )


def _ticker(e: dict) -> PriceUpdate:
    """A 24hrTicker is a 24hrMiniTicker plus best bid/ask, the 24 h change and the last trade id."""
    update = _mini_ticker(e, TICKER)
    update.bid = dec(e["b"])
    update.ask = dec(e["a"])
    update.bid_qty = quantity(e.get("B", "0"))
    update.ask_qty = quantity(e.get("A", "0"))
    update.change_24h_percent = signed_dec(e["P"])
    update.update_id = _opt_int(e.get("L"))
    return update


def _kline(e: dict) -> PriceUpdate:
    k = e["k"]
    if type(k) is not dict:
        raise ParseError("kline `k` is not an object")
    return PriceUpdate(_symbol(e), KLINE, _time(e), price=dec(k["c"]), update_id=_opt_int(k.get("L")))


ZERO, INFINITY = Decimal(0), Decimal("Infinity")
BOOK_TICKER_FIELDS = len(KNOWN_FIELDS[BOOK_TICKER])


def _book_ticker(e: dict) -> PriceUpdate:
    """Best bid/ask with sizes; `u` (the book update id) orders quotes, so it is required.

    The busiest stream (see bench/streaming): a sound quote is taken in one pass of chained
    comparisons (a NaN raises, an infinity fails them); anything else goes through the
    field-by-field checks, which name what is wrong.
    """
    b, a, bq, aq, u = e.get("b"), e.get("a"), e.get("B"), e.get("A"), e.get("u")
    if type(b) is str and type(a) is str and type(bq) is str and type(aq) is str and type(u) is int:
        try:
            bid, ask, bid_qty, ask_qty = Decimal(b), Decimal(a), Decimal(bq), Decimal(aq)
            sound = (
                ZERO < bid < INFINITY
                and ZERO < ask < INFINITY
                and ZERO <= bid_qty <= MAX_QUANTITY
                and ZERO <= ask_qty <= MAX_QUANTITY
                and u >= 0
            )
        except InvalidOperation:
            sound = False
        if sound:
            symbol = _symbol(e)
            return PriceUpdate(
                symbol, BOOK_TICKER, None, None, bid, ask, None, None, None, None, None, u, bid_qty, ask_qty
            )
    return PriceUpdate(
        _symbol(e),
        BOOK_TICKER,
        None,
        bid=positive_dec(b),
        ask=positive_dec(a),
        bid_qty=quantity(bq),
        ask_qty=quantity(aq),
        update_id=required_id(e, "u"),
    )


def _book_ticker_frame(event: dict, stream: str | None) -> Frame:
    """A bookTicker frame; a quote accepted had all six known fields, so any more are unknown."""
    return Frame(BOOK_TICKER, [_book_ticker(event)], len(event) > BOOK_TICKER_FIELDS, stream)


_EVENT_PARSERS = {
    TRADE: _trade,
    AGG_TRADE: _agg_trade,
    MINI_TICKER: _mini_ticker,
    TICKER: _ticker,
    KLINE: _kline,
}


def parse_event(event: object) -> Frame:
    """Parse one unwrapped payload: an event object or a `!miniTicker@arr` array."""
    if type(event) is list:
        return _parse_array(event)
    if type(event) is not dict:
        raise ParseError("payload is neither an object nor an array")
    kind = event.get("e")
    try:
        if kind is None:
            return _parse_untyped(event)
        parser = _EVENT_PARSERS.get(kind)
        if parser is None:
            return Frame(SERVER_SHUTDOWN if kind == SERVER_SHUTDOWN else UNKNOWN, [])
        update = parser(event)
    except KeyError as missing:
        raise ParseError(f"{kind or 'event'} without field {missing}") from None
    return Frame(kind, [update], not event.keys() <= KNOWN_FIELDS[kind])


def _parse_untyped(event: dict) -> Frame:
    """bookTicker has no `e`; replies to SUBSCRIBE carry `result` or `error` and `id`."""
    if "s" in event and ("b" in event or "u" in event):  # a bookTicker: its parser checks each field
        return _book_ticker_frame(event, None)
    if "id" in event and ("result" in event or "error" in event):
        return Frame(REPLY, [])
    return Frame(UNKNOWN, [])


def _parse_array(events: list) -> Frame:
    updates: list[PriceUpdate] = []
    unknown_fields = False
    for event in events:
        if type(event) is not dict or event.get("e") != MINI_TICKER:
            raise ParseError("array element is not a 24hrMiniTicker")
        try:
            updates.append(_mini_ticker(event))
        except KeyError as missing:
            raise ParseError(f"24hrMiniTicker without field {missing}") from None
        unknown_fields = unknown_fields or not event.keys() <= KNOWN_FIELDS[MINI_TICKER]
    return Frame(MINI_TICKER_ARR, updates, unknown_fields)


def parse_frame(text: str | bytes) -> Frame:
    """Parse one WebSocket text frame, raw or wrapped as `{"stream", "data"}`.

    orjson decodes it at several times json.loads's speed (bench/streaming) and to the same
    values for every frame accepted here: the exchange's decimals are strings, kept exact.
    Where the two differ, the frame is refused either way: orjson refuses NaN, lone
    surrogates and nesting over 1024 deep outright, and reads an integer past 64 bits as a
    float, which no id or time check accepts.
    """
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:  # also invalid UTF-8
        raise ParseError("frame is not valid JSON") from None
    if type(message) is dict and "stream" in message and "data" in message:
        stream, event = message["stream"], message["data"]
        if type(event) is dict and "e" not in event and "u" in event and "s" in event and type(stream) is str:
            return _book_ticker_frame(event, stream)  # the busiest stream: straight to its parser
        frame = parse_event(event)
        frame.stream = stream if type(stream) is str else None
        return frame
    return parse_event(message)


# ---- the busiest stream's fast path ----------------------------------------------------------
class BookTickerQuote(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A bookTicker payload with exactly its six documented fields."""

    u: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # higher: left to the general path
    s: str
    b: str
    B: str
    a: str
    A: str


class BookTickerFrame(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A combined-stream frame `{"stream", "data"}` carrying a bookTicker, nothing else."""

    stream: str
    data: BookTickerQuote


_decode_quote_frame = msgspec.json.Decoder(BookTickerFrame).decode
# An upper-case symbol, then two prices and two sizes as Binance writes them. Each number is
# exactly what str(Decimal(text)) writes back (no leading zero, no exponent, at most 5 zeros
# after "0."), is above 0 (a price of 0 is refused) and below 1e15 (MAX_QUANTITY): the text
# is then the exact decimal itself. Anything else (0 sizes, exponents, 16 digits...) is
# left to the field-by-field checks, which decide as always.
_EXACT = r"(?:[1-9][0-9]{0,14}(?:\.[0-9]{1,18})?|0\.0{0,5}[1-9][0-9]{0,12})"
_SOUND_QUOTE = re.compile(rf"[A-Z0-9]{{2,20}}(?: {_EXACT}){{4}}").fullmatch
# stream, symbol, `u`, (bid, bid qty, ask, ask qty)
QuoteFields = tuple[str, str, int, tuple[str, str, str, str]]


def fast_quote(data: bytes) -> QuoteFields | None:
    """A combined-stream bookTicker frame's fields when it is exactly the usual sound shape,
    its decimals as the exchange's validated text; None sends the frame to `parse_frame`.

    What it returns is what `parse_frame` makes of the same frame, decimals as text (the
    test of the two keeps that true); it creates no dict and no Decimal: bookTicker is the
    busiest stream (bench/streaming). A decimal is made when one is read (PriceRecord).
    """
    if b"@bookTicker" not in data:  # a cheap look before decoding: other kinds go their way
        return None
    try:
        frame = _decode_quote_frame(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    q = frame.data
    s, b, bq, a, aq = q.s, q.b, q.B, q.a, q.A
    if _SOUND_QUOTE(f"{s} {b} {bq} {a} {aq}") is None:
        return None
    return frame.stream, s, q.u, (b, bq, a, aq)
