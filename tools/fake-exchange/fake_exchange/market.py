"""A random-walk market that builds Binance spot payloads in their documented shapes."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from .trades import AggTrade, TradeRecord

EIGHT_PLACES = Decimal("0.00000001")
DEFAULT_START_PRICES = {
    "BTCUSDT": "90000",
    "ETHUSDT": "3000",
    "BNBUSDT": "600",
    "SOLUSDT": "150",
    "XRPUSDT": "0.6",
    "BNBBTC": "0.0067",
}
SYMBOL_KINDS = ("trade", "aggTrade", "miniTicker", "ticker", "bookTicker")
ALL_MINI_TICKERS = "!miniTicker@arr"


def fmt(value: Decimal) -> str:
    """Format a Decimal the way Binance does: eight decimal places, as a string."""
    return str(value.quantize(EIGHT_PLACES))


@dataclass
class SymbolState:
    """The 24 h state of one symbol's random walk."""

    last: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    open_time: int
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    trades: int = 0
    last_qty: Decimal = Decimal("0.001")
    spread: Decimal = field(default=Decimal("0.0001"))

    @property
    def bid(self) -> Decimal:
        """Best bid: half a spread under the last price."""
        return self.last * (1 - self.spread / 2)

    @property
    def ask(self) -> Decimal:
        """Best ask: half a spread over the last price."""
        return self.last * (1 + self.spread / 2)


def trade_event(
    symbol: str,
    price: str,
    trade_id: int,
    now_ms: int | None = None,
    qty: str = "1",
    buyer_maker: bool = True,
) -> dict:
    """A `trade` event in Binance's documented shape, stamped now unless `now_ms` is given."""
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    return {
        "e": "trade",
        "E": now_ms,
        "s": symbol,
        "t": trade_id,
        "p": price,
        "q": qty,
        "T": now_ms,
        "m": buyer_maker,
        "M": True,
    }


def split_stream(stream: str) -> tuple[str, str] | None:
    """Split `btcusdt@trade` into (`BTCUSDT`, `trade`); None for a name we do not generate."""
    symbol, _, kind = stream.partition("@")
    if not symbol or not kind or not symbol.isalnum() or symbol != symbol.lower():
        return None
    if kind in SYMBOL_KINDS or kind.startswith("kline_"):
        return symbol.upper(), kind
    return None


class Market:
    """Random-walk prices for a set of symbols and every event shape built from them."""

    def __init__(self, symbols: Iterable[str] = DEFAULT_START_PRICES, seed: int | None = None):
        self.rng = random.Random(seed)
        self.seq = 0
        self.symbols: dict[str, SymbolState] = {}
        self.record = TradeRecord()  # every aggregate trade made, the truth candles are checked against
        for symbol in symbols:
            self.ensure(symbol)

    def ensure(self, symbol: str) -> SymbolState:
        """Return the state of `symbol`, starting a walk for a symbol seen for the first time."""
        state = self.symbols.get(symbol)
        if state is None:
            start = Decimal(DEFAULT_START_PRICES.get(symbol, "100"))
            state = SymbolState(start, start, start, start, open_time=0)
            self.symbols[symbol] = state
        return state

    def step(self, symbol: str, now_ms: int | None = None) -> AggTrade:
        """Move `symbol` one aggregate trade along its random walk, recorded at `now_ms` (default now)."""
        state = self.ensure(symbol)
        factor = Decimal(f"{1 + self.rng.gauss(0, 0.0002):.8f}")
        state.last = (state.last * factor).quantize(EIGHT_PLACES)
        state.high = max(state.high, state.last)
        state.low = min(state.low, state.last)
        state.last_qty = Decimal(f"{self.rng.uniform(0.0001, 2):.5f}")
        state.volume += state.last_qty
        state.quote_volume += state.last_qty * state.last
        state.trades += 1
        when = int(time.time() * 1000) if now_ms is None else now_ms
        buyer_maker = self.rng.random() < 0.5
        return self.record.add(symbol, state.last, state.last_qty, when, buyer_maker, self.rng.randint(1, 3))

    def next_seq(self) -> int:
        """Number the next event: one global counter across every stream."""
        self.seq += 1
        return self.seq

    def payload(self, stream: str, now_ms: int) -> dict | list | None:
        """Build the next event of `stream`, or None when it is not a stream we generate."""
        if stream == ALL_MINI_TICKERS:
            self.next_seq()
            return [self.mini_ticker(s, now_ms) for s in sorted(self.symbols)]
        parts = split_stream(stream)
        if parts is None:
            return None
        symbol, kind = parts
        seq = self.next_seq()
        if kind.startswith("kline_"):
            return self.kline(symbol, kind.removeprefix("kline_"), now_ms, seq)
        event: dict | list | None = getattr(self, _BUILDERS[kind])(symbol, now_ms, seq)
        return event

    def trade(self, symbol: str, now_ms: int, seq: int) -> dict:
        """A `trade` event whose trade id `t` is the global event number."""
        st = self.ensure(symbol)
        return trade_event(symbol, fmt(st.last), seq, now_ms, fmt(st.last_qty), self.rng.random() < 0.5)

    def agg_trade(self, symbol: str, now_ms: int, seq: int) -> dict:
        """The `aggTrade` event of the symbol's latest recorded trade (ids consecutive per symbol)."""
        trade = self.record.last(symbol) or self.step(symbol, now_ms)
        return trade.event(now_ms)

    def mini_ticker(self, symbol: str, now_ms: int, seq: int = 0) -> dict:
        """A `24hrMiniTicker` event."""
        st = self.ensure(symbol)
        return {
            "e": "24hrMiniTicker",
            "E": now_ms,
            "s": symbol,
            "c": fmt(st.last),
            "o": fmt(st.open),
            "h": fmt(st.high),
            "l": fmt(st.low),
            "v": fmt(st.volume),
            "q": fmt(st.quote_volume),
        }

    def ticker(self, symbol: str, now_ms: int, seq: int) -> dict:
        """A `24hrTicker` event; `L` (last trade id) is the global event number."""
        st = self.ensure(symbol)
        change = st.last - st.open
        percent = (change / st.open * 100).quantize(Decimal("0.001"))
        return {
            "e": "24hrTicker",
            "E": now_ms,
            "s": symbol,
            "p": fmt(change),
            "P": str(percent),
            "w": fmt(st.quote_volume / st.volume if st.volume else st.last),
            "x": fmt(st.open),
            "c": fmt(st.last),
            "Q": fmt(st.last_qty),
            "b": fmt(st.bid),
            "B": "1.00000000",
            "a": fmt(st.ask),
            "A": "1.00000000",
            "o": fmt(st.open),
            "h": fmt(st.high),
            "l": fmt(st.low),
            "v": fmt(st.volume),
            "q": fmt(st.quote_volume),
            "O": st.open_time,
            "C": now_ms,
            "F": 1,
            "L": seq,
            "n": st.trades,
        }

    def book_ticker(self, symbol: str, now_ms: int, seq: int) -> dict:
        """A `bookTicker` event (no `e`, no `E`); `u` is the global event number."""
        st = self.ensure(symbol)
        return {"u": seq, "s": symbol, "b": fmt(st.bid), "B": "1.00000000", "a": fmt(st.ask), "A": "1.00000000"}

    def kline(self, symbol: str, interval: str, now_ms: int, seq: int) -> dict:
        """A `kline` event for `interval`; `k.L` is the global event number."""
        st = self.ensure(symbol)
        start = now_ms - now_ms % 60_000
        k = {
            "t": start,
            "T": start + 59_999,
            "s": symbol,
            "i": interval,
            "f": 1,
            "L": seq,
            "o": fmt(st.open),
            "c": fmt(st.last),
            "h": fmt(st.high),
            "l": fmt(st.low),
            "v": fmt(st.volume),
            "n": st.trades,
            "x": False,
            "q": fmt(st.quote_volume),
            "V": "0.00000000",
            "Q": "0.00000000",
            "B": "0",
        }
        return {"e": "kline", "E": now_ms, "s": symbol, "k": k}

    def rest_price(self, symbol: str) -> dict:
        """The `/api/v3/ticker/price` answer for one symbol."""
        return {"symbol": symbol, "price": fmt(self.symbols[symbol].last)}

    def rest_24hr(self, symbol: str, now_ms: int) -> dict:
        """The `/api/v3/ticker/24hr` answer for one symbol (FULL shape)."""
        t = self.ticker(symbol, now_ms, self.seq)
        return {
            "symbol": symbol,
            "priceChange": t["p"],
            "priceChangePercent": t["P"],
            "weightedAvgPrice": t["w"],
            "prevClosePrice": t["x"],
            "lastPrice": t["c"],
            "lastQty": t["Q"],
            "bidPrice": t["b"],
            "bidQty": t["B"],
            "askPrice": t["a"],
            "askQty": t["A"],
            "openPrice": t["o"],
            "highPrice": t["h"],
            "lowPrice": t["l"],
            "volume": t["v"],
            "quoteVolume": t["q"],
            "openTime": t["O"],
            "closeTime": now_ms,
            "firstId": t["F"],
            "lastId": t["L"],
            "count": t["n"],
        }


_BUILDERS = {
    "trade": "trade",
    "aggTrade": "agg_trade",
    "miniTicker": "mini_ticker",
    "ticker": "ticker",
    "bookTicker": "book_ticker",
}
