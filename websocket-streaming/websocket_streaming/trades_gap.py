"""Holes in the aggregate trade ids, filled over REST; candle history from klines.

The feed reveals a hole when a trade's id is more than one past the newest applied (after a
reconnect, a rotation, a handover, a Redis outage), and at a symbol's first trade, when
what came before it in the open candles is unknown. One background thread fills holes from
`GET /api/v3/aggTrades?fromId=` (weight 4) and loads history from `GET /api/v3/klines`
(weight 2), every request inside `RestBudget`. What the REST API does not return (trades
older than it keeps, a budget or an error that outlasts the retries) stays missing: the
candles it belongs to are not `complete`, and the hole is counted as unfilled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .binance.rest import BinanceClient, BinanceError, BinanceRateLimited
from .candles import CandleBuilder, Trade, kline_candle, open_time_of
from .parser import ParseError, positive_dec, quantity

log = logging.getLogger("websocket_streaming.candles")
Reporter = Callable[[BaseException, dict[str, Any]], None]
AGG_TRADES_WEIGHT, KLINES_WEIGHT = 4, 2
PAGE = 1000  # rows per aggTrades request: Binance's maximum
ATTEMPTS = 5  # per request, before the rest of a hole is given up as unfilled
HOUR_MS = 3_600_000  # aggTrades by time: start and end less than an hour apart


class RestBudget:
    """Request weight this process may spend on candles per minute (a sliding window)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.spent_total = 0
        self._spent: deque[tuple[float, int]] = deque()
        self._clock = clock

    def wait_for(self, weight: int) -> float:
        """Seconds until `weight` fits in the window (0: spend it now)."""
        now = self._clock()
        while self._spent and now - self._spent[0][0] >= 60.0:
            self._spent.popleft()
        used = sum(w for _, w in self._spent)
        if used + weight <= self.per_minute or not self._spent:
            return 0.0
        return 60.0 - (now - self._spent[0][0])

    def spend(self, weight: int) -> None:
        """Record `weight` spent now."""
        self._spent.append((self._clock(), weight))
        self.spent_total += weight


def rest_trade(symbol: str, row: dict[str, Any]) -> Trade:
    """A `GET /api/v3/aggTrades` row as a trade, checked like a feed frame (ParseError if not sound)."""
    try:
        agg_id, first, last, when = row["a"], row["f"], row["l"], row["T"]
        price, qty = positive_dec(row["p"]), quantity(row["q"])
    except (KeyError, TypeError) as exc:
        raise ParseError(f"unexpected aggTrades row: {exc!r}") from None
    if not all(type(v) is int and v >= 0 for v in (agg_id, first, last, when)) or last < first:
        raise ParseError("unexpected aggTrades row: ids or time")
    return Trade(symbol, agg_id, price, qty, when, last - first + 1)


class GapHealer:
    """One thread: fills holes and loads history, in the order they were found."""

    def __init__(
        self,
        client: BinanceClient,
        builder: CandleBuilder,
        budget: RestBudget,
        *,
        max_trades: int = 100_000,
        may_call: Callable[[], bool] = lambda: True,
        report_error: Reporter | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        self.client = client
        self.builder = builder
        self.budget = budget
        self.max_trades = max_trades  # the largest hole filled; older ids of a larger one stay missing
        self.may_call = may_call  # False while another process holds the feed (a follower never calls)
        self.report_error = report_error
        self.retry_delay = retry_delay
        self.requests = 0
        self.errors = 0
        self.pending = 0  # jobs queued or running
        self._pending_lock = threading.Lock()  # `found` runs in the reader thread, jobs end in this one
        self._jobs: queue.SimpleQueue[tuple[str, int, int, int]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="candle-heal")
            self._thread.start()

    def stop(self) -> None:
        """Abandon the jobs left."""
        self._stop.set()

    def found(self, symbol: str, hole: tuple[int, int], trade_time: int) -> None:
        """A hole the feed revealed: (0, id - 1) at a symbol's first trade, else (lo, hi)."""
        with self._pending_lock:
            self.pending += 1
        self._jobs.put((symbol, hole[0], hole[1], trade_time))

    def idle(self) -> bool:
        """True when no job is queued or running."""
        return self.pending == 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                symbol, lo, hi, when = self._jobs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                if lo == 0:
                    self._first_trade(symbol, hi, when)
                else:
                    self._fill(symbol, lo, hi)
            except Exception as exc:  # the thread goes on: the next hole is someone's candle
                log.exception("candle gap job failed")
                if self.report_error is not None:
                    self.report_error(exc, {"what": "candle gap"})
            finally:
                with self._pending_lock:
                    self.pending -= 1

    # ---- a symbol's first trade: history, then the open candles from their start -----
    def _first_trade(self, symbol: str, newest: int, when: int) -> None:
        """Klines before the longest interval's open candle; the trades of that candle."""
        opened = open_time_of(self.builder.intervals[-1], when)
        first = self._first_id_since(symbol, opened, when)
        if first is None:  # unanswered: the open candles stay incomplete
            self.builder.gap_done(1)
            return
        self.builder.mark_before(symbol, first - 1)
        self._history(symbol, opened)
        if first <= newest:
            self._fill(symbol, first, newest)

    def _first_id_since(self, symbol: str, start: int, until: int) -> int | None:
        """The id of the first trade at or after `start` (ms), hour by hour up to `until`."""
        while start <= until:
            end = start + HOUR_MS - 1
            rows = self._call(AGG_TRADES_WEIGHT, self.client.agg_trades, symbol, None, start, end, 1)
            if rows is None:
                return None
            if rows:
                return int(rows[0]["a"])
            start += HOUR_MS
        return None

    def _history(self, symbol: str, before: int) -> None:
        """The last candles before `before` from klines (where no candle is held)."""
        for interval in self.builder.intervals:
            rows = self._call(KLINES_WEIGHT, self.client.klines, symbol, interval, self.builder.keep)
            try:
                candles = [kline_candle(symbol, interval, row) for row in rows or ()]
            except (ValueError, TypeError, IndexError, ArithmeticError) as exc:
                log.warning("klines of %s %s unreadable: %r", symbol, interval, exc)
                continue
            self.builder.load_history(candles, before)

    # ---- holes ---------------------------------------------------------------------
    def _fill(self, symbol: str, lo: int, hi: int) -> None:
        """Apply every trade from `lo` to `hi` the feed did not bring; count what stays missing."""
        start = max(lo, hi - self.max_trades + 1)
        at = start
        while at <= hi and not self._stop.is_set():
            holes = self.builder.missing(symbol, at, hi)  # a lagging line may have brought some
            if not holes:
                break
            at = holes[0][0]
            rows = self._call(AGG_TRADES_WEIGHT, self.client.agg_trades, symbol, at, None, None, PAGE)
            if not rows:
                break
            at = self._apply(symbol, rows, hi, at)
        missing = sum(h - low + 1 for low, h in self.builder.missing(symbol, lo, hi))
        if missing:
            log.warning("candles: %d trades of %s (ids %d-%d) could not be fetched", missing, symbol, lo, hi)
        self.builder.gap_done(missing)

    def _apply(self, symbol: str, rows: list[dict[str, Any]], hi: int, at: int) -> int:
        """Apply a page's trades up to `hi`; the next id to ask for (past `hi` when done or stuck)."""
        newest = at - 1
        for row in rows:
            try:
                trade = rest_trade(symbol, row)
            except ParseError as exc:
                log.warning("candles: aggTrades row refused: %s", exc)
                continue
            if trade.agg_id > hi:
                return hi + 1
            if trade.agg_id >= at:
                self.builder.heal(trade)
                newest = max(newest, trade.agg_id)
        return newest + 1 if newest >= at else hi + 1  # a page that does not move on: give up

    def _call(self, weight: int, fetch: Callable[..., Any], *args: Any) -> Any:
        """One REST request inside the budget, retried; None when it cannot be had."""
        attempt = 0
        while attempt < ATTEMPTS and not self._stop.is_set() and self.may_call():
            wait = max(self.budget.wait_for(weight), self.client.blocked_for())
            if wait > 0:  # waiting for the budget is not a failed attempt
                self._stop.wait(wait)
                continue
            self.budget.spend(weight)
            self.requests += 1
            attempt += 1
            try:
                return fetch(*args)
            except BinanceRateLimited as exc:
                self.errors += 1
                self._stop.wait(exc.retry_after)
            except BinanceError as exc:
                self.errors += 1
                log.warning("candles: REST request failed (%d of %d): %s", attempt, ATTEMPTS, exc)
                self._stop.wait(self.retry_delay * 2 ** (attempt - 1))
        return None
