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
from datetime import date, timedelta
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
    "3d": 259_200_000,  # from the epoch
    "1w": 604_800_000,  # from Monday 00:00 UTC
    "1M": 2_678_400_000,  # calendar months (31 days: the longest, for ordering only)
}
DAY_MS = 86_400_000
WEEK_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday


def open_time_of(interval: str, when: int) -> int:
    """The first millisecond (UTC) of the `interval` kline holding `when`, as Binance aligns it."""
    if interval == "1M":
        day = date(1970, 1, 1) + timedelta(days=when // DAY_MS)
        return (date(day.year, day.month, 1) - date(1970, 1, 1)).days * DAY_MS
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    return when - (when - offset) % INTERVAL_MS[interval]


def next_open_time(interval: str, open_ms: int) -> int:
    """The first millisecond of the kline after the one opening at `open_ms`."""
    if interval == "1M":
        day = date(1970, 1, 1) + timedelta(days=open_ms // DAY_MS)
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return (following - date(1970, 1, 1)).days * DAY_MS
    return open_ms + INTERVAL_MS[interval]


def buckets(trades: Iterable[AggTrade], interval: str) -> dict[int, list[AggTrade]]:
    """Open time -> the trades of that kline, oldest first, for every interval from the first
    trade's to the last one's: one with no trade has an empty list (Binance lists it too)."""
    found: dict[int, list[AggTrade]] = {}
    for trade in trades:
        found.setdefault(open_time_of(interval, trade.time_ms), []).append(trade)
    if not found:
        return {}
    at, last, filled = min(found), max(found), {}
    while at <= last:
        filled[at] = sorted(found.get(at, ()), key=lambda t: t.agg_id)
        at = next_open_time(interval, at)
    return filled


def fmt8(value: Decimal) -> str:
    """Eight decimal places, as Binance writes prices and quantities."""
    return format(value.quantize(EIGHT_PLACES), "f")  # 0 too: "0.00000000", never "0E-8"


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
        (from `start` when given), oldest first. An interval without trades between two with
        trades is listed as Binance lists it: prices the close before, volume 0, 0 trades."""
        first = None if start is None else open_time_of(interval, start)
        chosen = [t for t in self.all(symbol) if _within(t.time_ms, first, end)]
        lines = buckets(chosen, interval)
        opens = sorted(lines)
        chosen_opens = set(opens[:limit] if start is not None else opens[-limit:])
        rows, close = [], None
        for at in opens:
            if lines[at]:
                close = lines[at][-1].price
            if at in chosen_opens:
                rows.append(kline_row(at, next_open_time(interval, at) - at, lines[at], close))
        return rows


def kline_row(
    open_ms: int, size: int, trades: Iterable[AggTrade], close: Decimal | None = None
) -> list[object]:
    """One Binance kline row (12 fields) from the trades of its interval (`size` ms long); with
    none, an empty one at `close` (the close before it)."""
    rows = sorted(trades, key=lambda t: t.agg_id)
    prices = [t.price for t in rows] or [close if close is not None else Decimal(0)]
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
