"""The fake exchange's own record of every aggregate trade it made, and what Binance builds
from it: `aggTrade` events, `GET /api/v3/aggTrades` pages and `GET /api/v3/klines` rows.

Aggregate trade ids are consecutive per symbol (as on Binance), and so are the trade ids
each one covers (`f`..`l`). The record is the truth a test compares the service's candles to.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

EIGHT_PLACES = Decimal("0.00000001")
INTERVAL_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


def fmt8(value: Decimal) -> str:
    """Eight decimal places, as Binance writes prices and quantities."""
    return str(value.quantize(EIGHT_PLACES))


def plain(value: Decimal) -> str:
    """Exact, without exponent: a quote volume (price x quantity) keeps every digit."""
    return format(value, "f")


@dataclass(frozen=True)
class AggTrade:
    """One aggregate trade as the exchange made it."""

    symbol: str
    agg_id: int
    price: Decimal
    qty: Decimal
    first_trade_id: int
    last_trade_id: int
    time_ms: int
    buyer_maker: bool

    def rest_row(self) -> dict[str, object]:
        """The `GET /api/v3/aggTrades` row."""
        return {
            "a": self.agg_id,
            "p": fmt8(self.price),
            "q": fmt8(self.qty),
            "f": self.first_trade_id,
            "l": self.last_trade_id,
            "T": self.time_ms,
            "m": self.buyer_maker,
            "M": True,
        }

    def event(self, event_ms: int | None = None) -> dict[str, object]:
        """The `aggTrade` WebSocket event."""
        when = self.time_ms if event_ms is None else event_ms
        return {"e": "aggTrade", "E": when, "s": self.symbol, **self.rest_row()}


class TradeRecord:
    """Every aggregate trade per symbol, in id order; thread-safe. Past `keep` trades of a
    symbol the oldest half is forgotten (a long benchmark must not grow without end)."""

    def __init__(self, keep: int = 1_000_000) -> None:
        self.keep = keep
        self._next_agg_id: dict[str, int] = {}
        self._trades: dict[str, list[AggTrade]] = {}
        self._times: dict[str, list[int]] = {}
        self._next_trade_id: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(
        self, symbol: str, price: Decimal, qty: Decimal, time_ms: int, buyer_maker: bool, fills: int = 1
    ) -> AggTrade:
        """Record the next aggregate trade of `symbol` (covering `fills` trades)."""
        with self._lock:
            trades = self._trades.setdefault(symbol, [])
            times = self._times.setdefault(symbol, [])
            time_ms = max(time_ms, times[-1]) if times else time_ms  # the exchange's clock never goes back
            first = self._next_trade_id.get(symbol, 1)
            self._next_trade_id[symbol] = first + fills
            agg_id = self._next_agg_id[symbol] = self._next_agg_id.get(symbol, 0) + 1
            trade = AggTrade(symbol, agg_id, price, qty, first, first + fills - 1, time_ms, buyer_maker)
            trades.append(trade)
            times.append(time_ms)
            if len(trades) > self.keep:
                del trades[: self.keep // 2], times[: self.keep // 2]
            return trade

    def last(self, symbol: str) -> AggTrade | None:
        """The newest trade of `symbol`, None before its first."""
        with self._lock:
            trades = self._trades.get(symbol)
            return trades[-1] if trades else None

    def all(self, symbol: str) -> list[AggTrade]:
        """Every trade of `symbol`, oldest first."""
        with self._lock:
            return list(self._trades.get(symbol, ()))

    def page(
        self, symbol: str, from_id: int | None, start: int | None, end: int | None, limit: int
    ) -> list[AggTrade]:
        """What `GET /api/v3/aggTrades` answers: from `from_id` (inclusive), else within
        [start, end], else the most recent `limit`."""
        with self._lock:
            trades, times = self._trades.get(symbol, []), self._times.get(symbol, [])
            if from_id is not None:
                lo = max(0, from_id - (trades[0].agg_id if trades else 1))
            elif start is not None:
                lo = bisect.bisect_left(times, start)
            elif end is not None:
                lo = max(0, bisect.bisect_right(times, end) - limit)
            else:
                lo = max(0, len(trades) - limit)
            chosen = trades[lo : lo + limit]
        return [t for t in chosen if _within(t.time_ms, start, end)]

    def klines(
        self, symbol: str, interval: str, start: int | None, end: int | None, limit: int
    ) -> list[list[object]]:
        """What `GET /api/v3/klines` answers: the newest `limit` candles in [start, end]
        (from `start` when given), oldest first. Intervals without trades are left out."""
        size = INTERVAL_MS[interval]
        buckets: dict[int, list[AggTrade]] = {}
        for trade in self.all(symbol):
            if _within(trade.time_ms, None if start is None else start - start % size, end):
                buckets.setdefault(trade.time_ms - trade.time_ms % size, []).append(trade)
        opens = sorted(buckets)
        opens = opens[:limit] if start is not None else opens[-limit:]
        return [kline_row(o, size, buckets[o]) for o in opens]


def kline_row(open_ms: int, size: int, trades: Iterable[AggTrade]) -> list[object]:
    """One Binance kline row (12 fields) from the trades of its interval, in id order."""
    rows = sorted(trades, key=lambda t: t.agg_id)
    prices = [t.price for t in rows]
    volume = sum((t.qty for t in rows), Decimal(0))
    quote = sum((t.qty * t.price for t in rows), Decimal(0))
    taker_buy = [t for t in rows if not t.buyer_maker]
    return [
        open_ms,
        fmt8(prices[0]),
        fmt8(max(prices)),
        fmt8(min(prices)),
        fmt8(prices[-1]),
        fmt8(volume),
        open_ms + size - 1,
        plain(quote),
        sum(t.last_trade_id - t.first_trade_id + 1 for t in rows),
        fmt8(sum((t.qty for t in taker_buy), Decimal(0))),
        plain(sum((t.qty * t.price for t in taker_buy), Decimal(0))),
        "0",
    ]


def _within(when: int, start: int | None, end: int | None) -> bool:
    return (start is None or when >= start) and (end is None or when <= end)
