"""Candles in a worker: trades in from the feed, SSE `candle` events out, and in Redis mode
the leader's candles shared with every worker and instance.

The process that holds the feed (leader, solo, or standalone) builds candles and heals
holes over REST. Every `event_every` seconds it turns the candles that changed into SSE
events and, as leader, publishes them (fenced by the upstream lock, like prices) on
`<prefix>candle-updates` and into the hash `<prefix>candles`, where a worker that
subscribes loads them from. A follower builds nothing and never calls REST: it serves the
leader's candles, `complete` flags included. The SSE events themselves travel with the
prices (`price-updates`, see book.py), under the leader's ids, so `Last-Event-ID` resumes
them on any worker; a follower announces only what a reload of the hash changed here.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from shared.redis_conn import REDIS_ERRORS, describe

from .binance.rest import BinanceClient
from .book import PriceBook
from .candles import BACKWARDS, DUPLICATE, MALFORMED, CandleBuilder, Trade, candle_json
from .parser import PriceUpdate
from .redis_bridge import FOLLOWER, LEADER, RedisBridge
from .settings import StreamingConfig
from .trades_gap import GapHealer, RestBudget

log = logging.getLogger("websocket_streaming.candles")
Reporter = Callable[[BaseException, dict[str, Any]], None]
FULL_EVERY = 60.0  # seconds between the leader's rewrites of the whole hash (evicted candles leave it)
COVERAGE_FIELD = "coverage"
STORE_SCRIPT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[5] == '1' then
  redis.call('del', KEYS[2])
end
for i = 6, #ARGV, 2 do
  redis.call('hset', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('pexpire', KEYS[2], ARGV[4])
if ARGV[3] ~= '' then
  redis.call('publish', ARGV[2], ARGV[3])
end
return 1
"""


def candle_field(candle: dict[str, Any]) -> str:
    """The hash field of one candle: `<symbol>|<interval>|<open_time>`."""
    return f"{candle['symbol']}|{candle['interval']}|{candle['open_time']}"


class CandleFeed:
    """The candles of one worker: builder, healer, SSE events and the Redis share."""

    def __init__(
        self,
        settings: StreamingConfig,
        book: PriceBook,
        may_call_rest: Callable[[], bool],
        report_error: Reporter | None = None,
    ) -> None:
        self.book = book
        self.builder = CandleBuilder(settings.symbols, settings.candle_intervals, settings.candle_history)
        self.budget = RestBudget(settings.candle_rest_weight_per_minute)
        self.healer = GapHealer(
            BinanceClient(settings.binance_rest_url),
            self.builder,
            self.budget,
            max_trades=settings.candle_heal_max_trades,
            may_call=may_call_rest,
            report_error=report_error,
        )
        self.event_every = settings.candle_event_seconds
        self.report_error = report_error
        self.share: CandleShare | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, bridge: RedisBridge | None, price_ttl: int) -> None:
        """Start the healer and the event tick; with `bridge`, share through its Redis."""
        self.healer.start()
        if bridge is not None:
            self.share = CandleShare(bridge, self.builder, self.book, price_ttl)
            self.share.start()
        self._thread = threading.Thread(target=self._tick, daemon=True, name="candle-events")
        self._thread.start()

    def stop(self) -> None:
        """Stop every thread."""
        self._stop.set()
        self.healer.stop()
        if self.share is not None:
            self.share.stop()

    def trade(self, update: PriceUpdate) -> None:
        """An admitted aggTrade update from the feed (the caller holds the ingest lock)."""
        if update.update_id is None or update.price is None or update.quantity is None:
            return
        when = update.trade_time if update.trade_time is not None else update.event_time or 0
        trade = Trade(update.symbol, update.update_id, update.price, update.quantity, when, update.trade_count)
        hole = self.builder.live(trade)
        if hole is not None:
            self.healer.found(update.symbol, hole, when)

    def malformed(self) -> None:
        """An aggTrade frame the parser refused."""
        self.builder.count_dropped(MALFORMED)

    def heal_known_holes(self) -> None:
        """Taking over the feed: fill the holes the previous holder left (in the coverage it shared)."""
        for symbol in self.builder.symbols:
            ranges = self.builder.coverage_ranges(symbol)
            for (_, end), (start, _) in itertools.pairwise(ranges):
                self.healer.found(symbol, (end + 1, start - 1), 0)

    def _tick(self) -> None:
        while not self._stop.wait(self.event_every):
            try:
                self.flush()
            except Exception as exc:
                log.exception("candle tick failed")
                if self.report_error is not None:
                    self.report_error(exc, {"what": "candle tick"})

    def flush(self) -> None:
        """SSE events for the candles that changed; as leader, publish them."""
        changed = self.builder.export(changed_only=True)
        for candle in changed["candles"]:  # a leader's reach every worker with the prices (book.py)
            self.book.add_event(candle["symbol"], candle_json(candle), candle["interval"], candle["open_time"])
        if self.share is not None:
            self.share.publish(changed)
        if self.healer.idle():  # a hole being filled needs the range below it kept
            self.builder.prune()

    def summary(self) -> dict[str, Any]:
        """What /stats shows."""
        c = self.builder.counters
        return {
            "candles_held": self.builder.held(),
            "candles_max": self.builder.keep * len(self.builder.intervals) * len(self.builder.symbols),
            "candle_intervals": list(self.builder.intervals),
            "candle_trades_applied": c.applied,
            "candle_trades_healed": c.healed_trades,
            "candle_gaps_found": c.gaps_found,
            "candle_gaps_healed": c.gaps_healed,
            "candle_gaps_unfilled": c.gaps_unfilled,
            "candle_trades_unfilled": c.unfilled_trades,
            "candle_trades_dropped": dict(c.dropped),
            "candle_rest_requests": self.healer.requests,
            "candle_rest_errors": self.healer.errors,
            "candle_rest_weight_spent": self.budget.spent_total,
            "candle_heals_pending": self.healer.pending,
        }


class CandleShare:
    """Redis: the leader writes and publishes its candles; every other worker adopts them."""

    def __init__(self, bridge: RedisBridge, builder: CandleBuilder, book: PriceBook, ttl: int) -> None:
        self.bridge = bridge
        self.builder = builder
        self.book = book
        self.ttl_ms = ttl * 1000
        prefix = bridge.key_prefix.removesuffix("price:")
        self.channel = f"{prefix}candle-updates"
        self.hash_key = f"{prefix}candles"
        self._store = bridge.redis.register_script(STORE_SCRIPT)
        self._full_due = True
        self._full_at = 0.0
        self._role = bridge.role
        self._stop = threading.Event()
        self._logged_at = -10.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="candle-redis")

    def start(self) -> None:
        """Start following (every worker subscribes; a leader skips its own messages)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()

    # ---- leader ----------------------------------------------------------------------
    def publish(self, changed: dict[str, Any]) -> None:
        """As leader: publish what changed and store it in the hash (rewritten whole at takeover
        and every minute; the message then tells followers to reload it)."""
        if self.bridge.role != LEADER:
            self._full_due = True
            return
        full = self._full_due or time.monotonic() - self._full_at >= FULL_EVERY
        stored = self.builder.export(changed_only=False) if full else changed
        if not changed["candles"] and not full:
            return
        fields: list[str] = [COVERAGE_FIELD, json.dumps(stored["coverage"])]
        for candle in stored["candles"]:
            fields += [candle_field(candle), json.dumps(candle, separators=(",", ":"))]
        message = json.dumps({"origin": self.bridge.id, "full": full, **changed}, separators=(",", ":"))
        args = [self.bridge.id, self.channel, message, self.ttl_ms, "1" if full else "0", *fields]
        try:
            self._store(keys=[self.bridge.lock_key, self.hash_key], args=args)
        except REDIS_ERRORS as exc:
            self._full_due = True  # what this one carried must reach Redis with the next
            self._log(exc)
            return
        if full:
            self._full_due, self._full_at = False, time.monotonic()

    # ---- every worker ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except REDIS_ERRORS as exc:
                self._log(exc)
                self._stop.wait(0.5)

    def _follow(self) -> None:
        pubsub = self.bridge.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self._load()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.25)
                if message is not None:
                    self._receive(message["data"])
                role = self.bridge.role
                if role != self._role:
                    self._role = role
                    if role == FOLLOWER:  # back from solo: the leader's candles replace this worker's
                        self._load()
        finally:
            pubsub.close()

    def _load(self) -> None:
        """Adopt every candle the leader stored."""
        stored = cast("dict[bytes, bytes]", self.bridge.redis.hgetall(self.hash_key))
        if not stored or self.bridge.role != FOLLOWER:
            return
        coverage = stored.pop(COVERAGE_FIELD.encode(), b"{}")
        candles = [json.loads(v) for v in stored.values()]
        self._adopt({"coverage": json.loads(coverage), "candles": candles}, announce=True)

    def _receive(self, data: bytes) -> None:
        if self.bridge.role != FOLLOWER:
            return  # the leader's own messages; a solo worker builds its own
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("unreadable message on %s", self.channel)
            return
        if message.get("origin") != self.bridge.id:
            self._adopt(message, announce=False)
            if message.get("full") is True:  # a new leader rewrote the hash: take all of it
                self._load()

    def _adopt(self, message: dict[str, Any], announce: bool) -> None:
        """Take the leader's candles; `announce`: as SSE events of this worker (a reload, where
        the candles held here may differ from the leader's: solo, or new here). The leader's own
        events arrive with its prices, under its ids (book.py), so a message's are not repeated."""
        try:
            adopted = self.builder.adopt(message)
        except (KeyError, ValueError, TypeError, ArithmeticError) as exc:
            log.warning("unreadable candles on %s: %r", self.channel, exc)
            return
        for candle in adopted if announce else ():
            self.book.add_event(candle["symbol"], candle_json(candle), candle["interval"], candle["open_time"])

    def _log(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._logged_at >= 10.0:
            self._logged_at = now
            log.warning("candles: redis error: %s", describe(exc))


class CandleMetrics:
    """Copies the candle counters into Prometheus as deltas (from the service's 1 s tick)."""

    def __init__(self, metrics: Any) -> None:
        self._gaps = metrics.counter(
            "sardag_candle_gaps_total",
            "Holes in aggregate trade ids, by result: healed over REST, or unfilled (candles left incomplete)",
            ["result"],
        )
        self._dropped = metrics.counter(
            "sardag_candle_trades_dropped_total",
            "aggTrade updates not applied to candles: duplicate, backwards (below every id applied), malformed",
            ["reason"],
        )
        self._unfilled = metrics.counter(
            "sardag_candle_trades_unfilled_total", "Aggregate trades REST could not give: missing from candles"
        )
        self._held = metrics.gauge("sardag_candles_held", "Candles held in memory (bounded by CANDLE_HISTORY)")
        self._seen: dict[str, int] = {}
        for result in ("healed", "unfilled"):
            self._gaps.labels(result=result).inc(0)
        for reason in (DUPLICATE, BACKWARDS, MALFORMED):
            self._dropped.labels(reason=reason).inc(0)
        self._unfilled.inc(0)

    def sync(self, builder: CandleBuilder) -> None:
        """Push the growth of every counter since the last sync, and the gauge."""
        c = builder.counters
        self._inc(self._gaps.labels(result="healed"), "healed", c.gaps_healed)
        self._inc(self._gaps.labels(result="unfilled"), "unfilled", c.gaps_unfilled)
        self._inc(self._unfilled, "unfilled_trades", c.unfilled_trades)
        for reason, count in list(c.dropped.items()):
            self._inc(self._dropped.labels(reason=reason), f"dropped:{reason}", count)
        self._held.set(builder.held())

    def _inc(self, metric: Any, key: str, total: int) -> None:
        grown = total - self._seen.get(key, 0)
        if grown > 0:
            metric.inc(grown)
            self._seen[key] = total
