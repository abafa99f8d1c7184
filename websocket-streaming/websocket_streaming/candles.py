"""Candles built from aggregate trades: exact OHLCV per symbol and interval, gap-aware.

Aggregate trade ids are consecutive per symbol. The builder keeps, per symbol, the ranges
of ids it applied (`Coverage`); a candle is `complete` when one applied range runs from the
id before its first trade to the id after its last (for the open candle: to the newest id
applied), so a hole anywhere in its span, or at its edges, shows. Trades may be applied in
any order (a hole healed over REST after later trades arrived): open and close are the
prices of the lowest and highest id, never of the arrival order.

Candles loaded from `GET /api/v3/klines` (history before this process's first trade) are
`source: "klines"`: the exchange aggregated every trade of them, so they are complete, but
they carry no aggregate trade ids. Memory is bounded: `keep` candles per symbol and interval.

An interval with no trade between two trade-built candles is an empty candle, as Binance's
klines list it (open = high = low = close = the close before, volume 0, no trade ids); it is
complete once the trade before it and the next id are both applied. Intervals are Binance's,
on its UTC boundaries: fixed sizes from the epoch (3d too), 1w from Monday, 1M calendar months.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

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
    "3d": 259_200_000,  # from the epoch, as Binance aligns it
    "1w": 604_800_000,  # from Monday 00:00 UTC (WEEK_OFFSET_MS)
    "1M": 2_678_400_000,  # calendar months: the longest one (31 days), for ordering; see open_time_of
}
DAY_MS = 86_400_000
WEEK_OFFSET_MS = 4 * DAY_MS  # 1970-01-01 was a Thursday: Monday 1970-01-05 starts a week
MONTH = "1M"
TRADES, KLINES = "trades", "klines"
CLOSE_GRACE_MS = 1_000  # a trade of the last second may still be on its way
# Why a trade from the feed was not applied (`sardag_candle_trades_dropped_total{reason}`).
DUPLICATE, BACKWARDS, MALFORMED = "duplicate", "backwards", "malformed"
DECIMAL_FIELDS = ("open", "high", "low", "close", "volume", "quote_volume")


def parse_intervals(value: str) -> tuple[str, ...]:
    """Comma-separated candle intervals, each one Binance names (`1m,5m,1h`), no repeats."""
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if not names:
        raise ValueError("must name at least one interval")
    for name in names:
        if name not in INTERVAL_MS:
            raise ValueError(f"unknown interval {name!r}; use {', '.join(INTERVAL_MS)}")
    return tuple(sorted(names, key=INTERVAL_MS.__getitem__))


def open_time_of(interval: str, when: int) -> int:
    """The first millisecond (UTC) of the `interval` candle that holds `when` (epoch ms)."""
    if interval == MONTH:
        day = _civil(when // DAY_MS)
        return _days(day[0], day[1], 1) * DAY_MS
    size = INTERVAL_MS[interval]
    offset = WEEK_OFFSET_MS if interval == "1w" else 0
    return when - (when - offset) % size


def next_open_time(interval: str, open_time: int) -> int:
    """The first millisecond of the candle after the one opening at `open_time`."""
    if interval == MONTH:
        year, month, _ = _civil(open_time // DAY_MS)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return _days(year, month, 1) * DAY_MS
    return open_time + INTERVAL_MS[interval]


def _civil(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day count since 1970-01-01 (proleptic Gregorian, any sign)."""
    day = _EPOCH_DATE + timedelta(days=days)
    return day.year, day.month, day.day


def _days(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to the date."""
    return (date(year, month, day) - _EPOCH_DATE).days


_EPOCH_DATE = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Trade:
    """One aggregate trade, from the feed or from `GET /api/v3/aggTrades`."""

    symbol: str
    agg_id: int
    price: Decimal
    qty: Decimal
    time_ms: int
    count: int = 1  # the trades it aggregates


@dataclass(slots=True)
class Candle:
    """One candle; `first_id`/`last_id` are None for a candle from klines."""

    symbol: str
    interval: str
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = Decimal(0)
    quote_volume: Decimal = Decimal(0)
    trades: int = 0
    first_id: int | None = None
    last_id: int | None = None
    source: str = TRADES
    complete: bool = False  # as last published (klines: always; followers: the leader's word)
    # An empty candle (no trade in its span): the id of the last trade before it. It is
    # complete once that id and the next are both applied (the next falls after its span).
    prev_id: int | None = field(default=None, compare=False)

    @property
    def empty(self) -> bool:
        """No trade in its span (a trade-built candle only: klines carry no ids)."""
        return self.source == TRADES and self.first_id is None

    @property
    def close_time(self) -> int:
        """The last millisecond of its interval (Binance's `closeTime`)."""
        return next_open_time(self.interval, self.open_time) - 1

    def add(self, trade: Trade, quote: Decimal) -> None:
        """Fold one trade in (`quote`: its price x quantity); the result does not depend on
        the order trades come in."""
        price, agg_id = trade.price, trade.agg_id
        if self.first_id is None:  # its first trade (an empty candle's prices were the one before's)
            self.first_id = self.last_id = agg_id
            self.open = self.high = self.low = self.close = price
        elif agg_id < self.first_id:
            self.first_id, self.open = agg_id, price
        elif self.last_id is None or agg_id > self.last_id:
            self.last_id, self.close = agg_id, price
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.volume += trade.qty
        self.quote_volume += quote
        self.trades += trade.count

    def to_dict(self, closed: bool, complete: bool) -> dict[str, Any]:
        """JSON-ready (decimals as exact strings), for Redis."""
        return {
            "symbol": self.symbol,
            "interval": self.interval,
            "open_time": self.open_time,
            "close_time": self.close_time,
            "open": str(self.open),
            "high": str(self.high),
            "low": str(self.low),
            "close": str(self.close),
            "volume": str(self.volume),
            "quote_volume": str(self.quote_volume),
            "trades": self.trades,
            "first_agg_id": self.first_id,
            "last_agg_id": self.last_id,
            "closed": closed,
            "complete": complete,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candle:
        """Rebuild a candle written by `to_dict` (raises KeyError/ValueError/TypeError when not one)."""
        interval = str(data["interval"])
        if interval not in INTERVAL_MS:
            raise ValueError(f"unknown interval {interval!r}")
        first, last = data.get("first_agg_id"), data.get("last_agg_id")
        o, h, low, c, volume, quote = (Decimal(str(data[n])) for n in DECIMAL_FIELDS)
        return cls(
            str(data["symbol"]),
            interval,
            int(data["open_time"]),
            o,
            h,
            low,
            c,
            volume,
            quote,
            trades=int(data["trades"]),
            first_id=None if first is None else int(first),
            last_id=None if last is None else int(last),
            source=KLINES if data.get("source") == KLINES else TRADES,
            complete=bool(data.get("complete")),
        )


def kline_candle(symbol: str, interval: str, row: list[Any]) -> Candle:
    """A `GET /api/v3/klines` row (12 fields) as a closed candle (raises on a malformed row)."""
    values = [Decimal(str(row[i])) for i in (1, 2, 3, 4, 5, 7)]
    if not all(v.is_finite() and v >= 0 for v in values) or type(row[0]) is not int or type(row[8]) is not int:
        raise ValueError("malformed kline row")
    o, h, low, c, volume, quote = values
    return Candle(symbol, interval, row[0], o, h, low, c, volume, quote, row[8], source=KLINES, complete=True)


class Coverage:
    """The aggregate trade ids applied, as sorted, merged, inclusive ranges."""

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.ranges: list[list[int]] = []
        for lo, hi in ranges:
            self.add_range(lo, hi)

    @property
    def newest(self) -> int | None:
        """The highest id covered, None when nothing is."""
        return self.ranges[-1][1] if self.ranges else None

    def add(self, ident: int) -> None:
        """Cover one id (the common case, the next id, costs O(1))."""
        ranges = self.ranges
        if ranges and ranges[-1][1] + 1 == ident:
            ranges[-1][1] = ident
        elif not ranges or ident > ranges[-1][1] + 1:
            ranges.append([ident, ident])
        else:
            self.add_range(ident, ident)

    def add_range(self, lo: int, hi: int) -> None:
        """Cover every id from `lo` to `hi`."""
        ranges = self.ranges
        i = bisect.bisect_left(ranges, [lo, lo])
        if i > 0 and ranges[i - 1][1] >= lo - 1:
            i -= 1
        j = i
        while j < len(ranges) and ranges[j][0] <= hi + 1:
            lo, hi = min(lo, ranges[j][0]), max(hi, ranges[j][1])
            j += 1
        ranges[i:j] = [[lo, hi]]

    def covers(self, lo: int, hi: int) -> bool:
        """Whether one range holds every id from `lo` to `hi`."""
        i = bisect.bisect_right(self.ranges, [lo, float("inf")]) - 1
        return i >= 0 and self.ranges[i][0] <= lo and self.ranges[i][1] >= hi

    def __contains__(self, ident: int) -> bool:
        return self.covers(ident, ident)

    def missing(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ranges of ids from `lo` to `hi` not covered."""
        holes, at = [], lo
        for start, end in self.ranges:
            if end < at:
                continue
            if start > hi:
                break
            if start > at:
                holes.append((at, start - 1))
            at = end + 1
        if at <= hi:
            holes.append((at, hi))
        return holes

    def forget_below(self, ident: int) -> None:
        """Drop what lies wholly below `ident` (ids of candles no longer held)."""
        while len(self.ranges) > 1 and self.ranges[0][1] < ident:
            self.ranges.pop(0)


@dataclass
class SymbolCandles:
    """One symbol's candles per interval (open time -> candle, open times sorted) and coverage."""

    coverage: Coverage = field(default_factory=Coverage)
    by_interval: dict[str, dict[int, Candle]] = field(default_factory=dict)
    opens: dict[str, list[int]] = field(default_factory=dict)
    newest_time: int = 0  # trade time of the newest trade applied


@dataclass
class CandleCounters:
    """What /stats and the metrics show."""

    applied: int = 0
    healed_trades: int = 0
    gaps_found: int = 0
    gaps_healed: int = 0
    gaps_unfilled: int = 0
    unfilled_trades: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


class CandleBuilder:
    """Every tracked symbol's candles at the configured intervals; thread-safe."""

    def __init__(
        self,
        symbols: Iterable[str],
        intervals: Iterable[str],
        keep: int = 1000,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.clock = clock  # epoch ms: when a candle with no trade after it counts as closed
        self.intervals = tuple(intervals)
        # (interval, size, offset): open time = t - (t - offset) % size; size 0: calendar months
        self._sizes = tuple(
            (i, 0 if i == MONTH else INTERVAL_MS[i], WEEK_OFFSET_MS if i == "1w" else 0) for i in self.intervals
        )
        self.keep = keep
        self.counters = CandleCounters()
        self._symbols = {s: SymbolCandles(by_interval={i: {} for i in self.intervals}) for s in symbols}
        self._changed: dict[tuple[str, str, int], None] = {}  # since the last `take_changed`
        # Candles last exported open: exported again once the clock closes them (no trade does).
        self._open: dict[tuple[str, str, int], None] = {}
        self._lock = threading.Lock()

    @property
    def symbols(self) -> tuple[str, ...]:
        """The tracked symbols."""
        return tuple(self._symbols)

    # ---- trades ----------------------------------------------------------------------
    def live(self, trade: Trade) -> tuple[int, int] | None:
        """Apply a trade from the feed; returns a hole (lo, hi) in the ids it revealed, if any.

        The first trade of a symbol reveals (0, id - 1): what came before it is unknown.
        An id already applied is dropped and counted; so is one below every id applied.
        """
        state = self._symbols.get(trade.symbol)
        if state is None:
            return None
        with self._lock:
            newest = state.coverage.newest
            if newest is not None and trade.agg_id <= newest:
                self._late(state, trade)
                return None
            self._apply(state, trade)
            self.counters.applied += 1
            if newest is None:
                return 0, trade.agg_id - 1
            if trade.agg_id > newest + 1:
                self.counters.gaps_found += 1
                return newest + 1, trade.agg_id - 1
            return None

    def _late(self, state: SymbolCandles, trade: Trade) -> None:
        """An id at or below the newest: applied only when it fills a known hole."""
        coverage = state.coverage
        if trade.agg_id in coverage:
            self.counters.dropped[DUPLICATE] += 1
        elif trade.agg_id < coverage.ranges[0][0]:
            self.counters.dropped[BACKWARDS] += 1
        else:  # a line that lagged delivers what the others missed
            self._apply(state, trade)
            self.counters.applied += 1

    def heal(self, trade: Trade) -> bool:
        """Apply a trade from the REST API unless its id was applied already."""
        state = self._symbols.get(trade.symbol)
        if state is None:
            return False
        with self._lock:
            if trade.agg_id in state.coverage:
                return False
            self._apply(state, trade)
            self.counters.healed_trades += 1
            return True

    def mark_before(self, symbol: str, ident: int) -> None:
        """Everything up to `ident` is accounted for (the trade before the first one built on)."""
        state = self._symbols.get(symbol)
        if state is not None and ident >= 0:
            with self._lock:
                state.coverage.add_range(ident, ident)

    def missing(self, symbol: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """The ids from `lo` to `hi` not applied yet."""
        with self._lock:
            return self._symbols[symbol].coverage.missing(lo, hi)

    def gap_done(self, unfilled: int) -> None:
        """Count a hole as healed, or as unfilled with `unfilled` trades the REST API did not give."""
        with self._lock:
            if unfilled:
                self.counters.gaps_unfilled += 1
                self.counters.unfilled_trades += unfilled
            else:
                self.counters.gaps_healed += 1

    def count_dropped(self, reason: str) -> None:
        """Count a trade frame dropped before it reached the builder (malformed)."""
        with self._lock:
            self.counters.dropped[reason] += 1

    def _apply(self, state: SymbolCandles, trade: Trade) -> None:
        state.coverage.add(trade.agg_id)
        when, symbol = trade.time_ms, trade.symbol
        if when > state.newest_time:
            state.newest_time = when
        quote = trade.qty * trade.price  # once, not once per interval (this runs for every trade)
        for interval, size, offset in self._sizes:
            open_time = when - (when - offset) % size if size else open_time_of(interval, when)
            candle = state.by_interval[interval].get(open_time)
            if candle is None or candle.source != TRADES:
                candle = self._candle(state, symbol, interval, open_time, trade.price)
                if candle is None:
                    continue
            candle.add(trade, quote)
            self._changed[(symbol, interval, open_time)] = None
            opens = state.opens[interval]
            if open_time != opens[-1]:  # healed into the past: the empty candles after it follow it
                self._settle_empty(state, interval, candle)

    def _candle(
        self, state: SymbolCandles, symbol: str, interval: str, open_time: int, price: Decimal
    ) -> Candle | None:
        """The trade-built candle at `open_time` (made if new, with the empty candles between it
        and its trade-built neighbours); None when older than all held."""
        candles = state.by_interval.setdefault(interval, {})
        candle = candles.get(open_time)
        if candle is not None:  # a klines candle already counts every trade of its span
            return candle if candle.source == TRADES else None
        opens = state.opens.setdefault(interval, [])
        if len(opens) >= self.keep and open_time < opens[0]:
            return None
        at = bisect.bisect_left(opens, open_time)
        before = candles[opens[at - 1]] if at else None
        after = candles[opens[at]] if at < len(opens) else None
        bisect.insort(opens, open_time)
        candle = candles[open_time] = Candle(symbol, interval, open_time, price, price, price, price)
        if before is not None and before.source == TRADES:
            self._fill_empty(state, before, open_time)
        if after is not None and after.source == TRADES:
            self._fill_empty(state, candle, after.open_time)
        while len(opens) > self.keep:
            del candles[opens.pop(0)]
        return candles.get(open_time)

    def _fill_empty(self, state: SymbolCandles, before: Candle, until: int) -> None:
        """Empty candles (Binance's klines list them) after `before` up to `until` (exclusive):
        open = high = low = close = the close before, volume 0, no trade."""
        interval = before.interval
        start = next_open_time(interval, before.open_time)
        size = INTERVAL_MS[interval]
        if interval != MONTH:  # never more than `keep` of them
            start = max(start, until - self.keep * size)
        candles, opens = state.by_interval[interval], state.opens[interval]
        prev_id = before.last_id if before.last_id is not None else before.prev_id
        price, at = before.close, start
        while at < until:
            if at not in candles:
                candles[at] = Candle(before.symbol, interval, at, price, price, price, price, prev_id=prev_id)
                bisect.insort(opens, at)
                self._changed[(before.symbol, interval, at)] = None
            at = next_open_time(interval, at)

    def _settle_empty(self, state: SymbolCandles, interval: str, candle: Candle) -> None:
        """The empty candles right after `candle` take its close and last id (it changed)."""
        opens, candles = state.opens[interval], state.by_interval[interval]
        at = bisect.bisect_right(opens, candle.open_time)
        price, prev_id = candle.close, candle.last_id
        while at < len(opens) and (empty := candles[opens[at]]).empty:
            if (empty.close, empty.prev_id) != (price, prev_id):
                empty.open = empty.high = empty.low = empty.close = price
                empty.prev_id = prev_id
                self._changed[(candle.symbol, interval, empty.open_time)] = None
            at += 1

    # ---- history and Redis -----------------------------------------------------------
    def load_history(self, candles: Iterable[Candle], before: int) -> int:
        """Store klines candles opening before `before` where no candle is held; returns how many."""
        stored = 0
        with self._lock:
            for candle in candles:
                state = self._symbols.get(candle.symbol)
                if state is None or candle.open_time >= before or candle.interval not in self.intervals:
                    continue
                held = state.by_interval.setdefault(candle.interval, {})
                opens = state.opens.setdefault(candle.interval, [])
                if candle.open_time in held or (len(opens) >= self.keep and candle.open_time < opens[0]):
                    continue
                held[candle.open_time] = candle
                bisect.insort(opens, candle.open_time)
                if len(opens) > self.keep:
                    del held[opens.pop(0)]
                self._changed[(candle.symbol, candle.interval, candle.open_time)] = None
                stored += 1
        return stored

    def export(self, changed_only: bool) -> dict[str, Any]:
        """Candles (all, or changed since the last export: traded, or closed by the clock) and
        each symbol's coverage, JSON-ready."""
        now = self.clock()
        with self._lock:
            if changed_only:
                candles = self._take_changed(now)
            else:
                candles = [
                    self._dict(st, st.by_interval[i][o], now)
                    for st in self._symbols.values()
                    for i, opens in st.opens.items()
                    for o in opens
                ]
            coverage = {s: st.coverage.ranges[-256:] for s, st in self._symbols.items()}
        return {"candles": candles, "coverage": coverage}

    def _take_changed(self, now: int) -> list[dict[str, Any]]:
        """The candles changed since the last call, and those it exported open that closed since."""
        changed, self._changed = self._changed, {}
        closing = [key for key in self._open if key not in changed]
        candles = []
        for key in [*changed, *closing]:
            symbol, interval, open_time = key
            state = self._symbols[symbol]
            candle = state.by_interval.get(interval, {}).get(open_time)
            data = None if candle is None else self._dict(state, candle, now)
            if data is not None and not data["closed"]:
                self._open[key] = None
                if key in changed:
                    candles.append(data)
                continue
            self._open.pop(key, None)
            if data is not None:
                candles.append(data)
        return candles

    def adopt(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """Take what the leader exported: its candles as they are, its coverage. Returns the
        candles that changed here (JSON-ready), for SSE."""
        adopted = []
        with self._lock:
            for data in message.get("candles", ()):
                candle = Candle.from_dict(data)
                state = self._symbols.get(candle.symbol)
                if state is None or candle.interval not in self.intervals:
                    continue
                if state.by_interval.get(candle.interval, {}).get(candle.open_time) == candle:
                    continue  # held already (a reload of the whole hash)
                self._put(state, candle)
                state.newest_time = max(state.newest_time, candle.open_time)
                adopted.append(data)
            for symbol, ranges in dict(message.get("coverage", {})).items():
                if symbol in self._symbols:
                    self._symbols[symbol].coverage = Coverage((int(lo), int(hi)) for lo, hi in ranges)
        return adopted

    def _put(self, state: SymbolCandles, candle: Candle) -> None:
        held = state.by_interval.setdefault(candle.interval, {})
        opens = state.opens.setdefault(candle.interval, [])
        if candle.open_time not in held:
            bisect.insort(opens, candle.open_time)
        held[candle.open_time] = candle
        if len(opens) > self.keep:
            del held[opens.pop(0)]

    # ---- reading ---------------------------------------------------------------------
    def query(self, symbol: str, interval: str, limit: int, until: int | None = None) -> list[dict[str, Any]]:
        """Up to `limit` candles opening before `until` (ms, exclusive; default: all), newest last."""
        now = self.clock()
        with self._lock:
            state = self._symbols[symbol]
            opens = state.opens.get(interval, [])
            end = len(opens) if until is None else bisect.bisect_left(opens, until)
            held = state.by_interval[interval] if opens else {}
            return [self._dict(state, held[o], now) for o in opens[max(0, end - limit) : end]]

    def _dict(self, state: SymbolCandles, candle: Candle, now: int) -> dict[str, Any]:
        closed = candle.source == KLINES or self._closed(state, candle, now)
        return candle.to_dict(closed, self._complete(state, candle, closed))

    @staticmethod
    def _closed(state: SymbolCandles, candle: Candle, now: int) -> bool:
        end = candle.close_time
        return state.newest_time > end or now > end + CLOSE_GRACE_MS

    @staticmethod
    def _complete(state: SymbolCandles, candle: Candle, closed: bool) -> bool:
        coverage = state.coverage
        if not coverage.ranges or candle.source == KLINES:  # a follower's copy: the leader said
            return candle.complete
        if candle.first_id is None or candle.last_id is None:  # empty: no trade between its neighbours'
            prev = candle.prev_id
            return candle.complete if prev is None else coverage.covers(prev, prev + 1)
        newest = coverage.newest if coverage.newest is not None else candle.last_id
        last = candle.last_id + 1 if closed else newest
        return coverage.covers(candle.first_id - 1, last)

    def newest_time(self, symbol: str) -> int:
        """Trade time (ms) of the newest trade of `symbol` applied, 0 before the first."""
        return self._symbols[symbol].newest_time

    def coverage_ranges(self, symbol: str) -> list[tuple[int, int]]:
        """The ranges of ids applied for `symbol`."""
        with self._lock:
            return [(lo, hi) for lo, hi in self._symbols[symbol].coverage.ranges]

    def held(self) -> int:
        """How many candles are held, over every symbol and interval."""
        with self._lock:
            return sum(len(o) for st in self._symbols.values() for o in st.opens.values())

    def prune(self) -> None:
        """Forget coverage below the oldest trade-built candle held (bounded memory)."""
        with self._lock:
            for state in self._symbols.values():
                held = [c for candles in state.by_interval.values() for c in candles.values()]
                firsts = [c.first_id for c in held if c.first_id is not None]
                if firsts:
                    state.coverage.forget_below(min(firsts) - 1)


def candle_json(candle: dict[str, Any]) -> str:
    """One candle as JSON text: decimals as JSON numbers written from their exact digits, like prices."""
    parts = []
    for name, value in candle.items():
        if name in DECIMAL_FIELDS:
            parts.append(f'"{name}":{value}')
        elif value is None:
            parts.append(f'"{name}":null')
        elif isinstance(value, bool):
            parts.append(f'"{name}":{"true" if value else "false"}')
        elif isinstance(value, int):
            parts.append(f'"{name}":{value}')
        else:
            parts.append(f'"{name}":"{value}"')  # symbol, interval, source: checked [A-Za-z0-9]
    return "{" + ",".join(parts) + "}"
