"""The ingest service of one worker: book, parser, upstream, backfill, Redis, metrics."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any

from shared import tracing
from shared.health_check import HealthCheck
from shared.sentry_integration import capture_exception

from .binance.backfill import Backfiller
from .binance.rest import BinanceClient
from .binance.streams import combined_url, host_of, stream_names
from .book import PriceBook
from .candle_feed import CandleFeed, CandleMetrics
from .dedup import TwinFrames, UpdateFilter
from .latency import ClockCheck, LatencyTracker
from .parser import AGG_TRADE, BOOK_TICKER, Frame, ParseError, QuoteFields, fast_quote, parse_frame
from .redis_bridge import INGESTING, SOLO, RedisBridge
from .settings import StreamingConfig
from .silence import StreamWatch
from .stats import IngestStats, MetricsSync
from .upstream import UpstreamManager, UpstreamSettings

log = logging.getLogger("websocket_streaming.service")
OFFLINE_HINT = (
    "{host} cannot be resolved (no internet or no DNS?); "
    "`make run-offline` (FEED=fake) runs the shipped fake exchange as the feed"
)


def report_error(exc: BaseException, context: dict[str, Any]) -> None:
    """Send an exception to Sentry (a no-op without a DSN)."""
    capture_exception(exc, context)


class StreamingService:
    """Everything that keeps the price book of one worker fed."""

    def __init__(self, settings: StreamingConfig, metrics: Any) -> None:
        self.settings = settings
        self.symbols = settings.symbols
        self.stale_after = settings.price_stale_seconds
        self.book = PriceBook(self.symbols, settings.ws_ring_size)
        self.stats = IngestStats()
        streams = stream_names(self.symbols, settings.ws_streams)
        self.url = combined_url(settings.binance_ws_url, streams)
        self.watch = StreamWatch(streams, settings.ws_stream_silence_seconds)
        self.backfiller = self._new_backfiller()
        self.candles = CandleFeed(settings, self.book, self._may_call_rest, report_error)
        self.updates = UpdateFilter()  # drops the twins of a rotation overlap or of A/B feeds
        self.twins = TwinFrames()  # ... and spares parsing those that are byte-equal
        self.upstream: UpstreamManager | None = None
        self.bridge: RedisBridge | None = None
        self.metrics = MetricsSync(self.stats, metrics)
        self.latency = LatencyTracker(metrics)
        self.candle_metrics = CandleMetrics(metrics)
        self.clock = ClockCheck(
            BinanceClient(settings.binance_rest_url),
            metrics,
            settings.binance_time_check_seconds,
            self.holds_upstream,  # only the process that talks to Binance asks it the time
        )
        self.started = False
        self.start_error: str | None = None
        self._pid: int | None = None  # the process ingest was started in
        self._start_lock = threading.Lock()
        self._failed_start_at = float("-inf")
        self._rates: deque[tuple[float, int]] = deque(maxlen=11)
        self._upstream_lock = threading.Lock()
        self._ingest_lock = threading.Lock()
        self._stop = threading.Event()
        self._parse_log_at = 0.0
        self._ticker: threading.Thread | None = None

    def _new_backfiller(self) -> Backfiller:
        client = BinanceClient(self.settings.binance_rest_url)
        return Backfiller(client, self.book, self.symbols, self.stats, report_error)

    # ---- the hot path: called by the reader thread for every frame -------------------
    def handle_frame(self, data: bytes, received_at: float, connection: int | None = None) -> str | None:
        """Parse one frame and apply its updates; returns the frame kind (None if invalid).

        `connection` names the connection that delivered it while another one is open too:
        a byte-equal twin of a frame the other delivered is then counted and skipped.
        """
        if connection is not None:
            with self._ingest_lock:
                kind = self.twins.twin_of(data, connection)
                if kind is not None:
                    self.stats.messages[kind] += 1
                    return kind
        # A sound bookTicker, most of the feed, skips the general parse (bench/streaming); a
        # sampled frame's span is the general path's.
        quote = fast_quote(data) if type(data) is bytes and not tracing.enabled() else None
        if quote is not None:
            self._apply_quote(quote, data, connection, received_at)
            return BOOK_TICKER
        try:
            frame = parse_frame(data)
        except ParseError as exc:
            with self._ingest_lock:
                self.stats.parse_errors += 1
            if b"aggTrade" in (data if isinstance(data, bytes) else data.encode()):
                self.candles.malformed()
            self._log_parse_error(exc, data)
            return None
        if frame.stream is not None:
            self.watch.seen[frame.stream] = received_at
        if tracing.enabled():  # a sampled frame's trace follows its updates: Redis, other workers, SSE
            with tracing.span("binance frame", kind="consumer") as span:
                self._apply(frame, data, connection, received_at, span.traceparent)
        else:  # no span at all: the no-op one costs a tenth of a bookTicker frame (bench/streaming)
            self._apply(frame, data, connection, received_at, None)
        updates = frame.updates
        if updates and updates[0].event_time is not None:
            self.latency.received(frame.kind, updates[0].event_time, received_at)
        return frame.kind

    def _apply(
        self, frame: Frame, data: bytes, connection: int | None, received_at: float, trace: str | None
    ) -> None:
        """Count `frame` and apply each of its updates that is news."""
        stream, apply, admit = frame.stream, self.book.apply, self.updates.admit
        with self._ingest_lock:
            self.stats.messages[frame.kind] += 1  # two connections deliver at once (rotation, A/B)
            if frame.unknown_fields:
                self.stats.unknown_fields += 1
            for update in frame.updates:
                if admit(stream, update):
                    apply(update, received_at, "websocket", trace)
                    if update.kind == AGG_TRADE:
                        self.candles.trade(update)
            if connection is not None:
                self.twins.remember(data, connection, frame.kind)

    def _apply_quote(self, quote: QuoteFields, data: bytes, connection: int | None, received_at: float) -> None:
        """`_apply` of a bookTicker from `fast_quote`: counted, then applied if news."""
        stream, symbol, update_id, fields = quote
        self.watch.seen[stream] = received_at
        with self._ingest_lock:
            self.stats.messages[BOOK_TICKER] += 1
            if self.updates.admit_quote(stream, symbol, update_id):
                self.book.apply_quote(symbol, update_id, fields, received_at)
            if connection is not None:
                self.twins.remember(data, connection, BOOK_TICKER)

    def _log_parse_error(self, exc: ParseError, data: bytes | str) -> None:
        now = time.monotonic()
        if now - self._parse_log_at >= 10.0:  # one line per 10 s, however bad the feed
            self._parse_log_at = now
            log.warning(
                "unparseable frame (%d so far): %s; frame starts %r", self.stats.parse_errors, exc, data[:80]
            )

    # ---- lifecycle -------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Start ingest unless it already runs in this process: called on every request.

        Whatever server runs the app, the first request of each serving process starts
        its ingest, after any fork and never in a process that does not serve (a gunicorn
        master, a reloader). A failed start is retried at most every 5 seconds.
        """
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._start_lock:
            if self._pid == pid or time.monotonic() - self._failed_start_at < 5.0:
                return
            if self._pid is not None:
                self._forget_parent()
            try:
                self.start()
            except Exception as exc:
                self._failed_start_at = time.monotonic()
                self.start_error = f"{type(exc).__name__}: {exc}"
                log.exception("ingest did not start")
                report_error(exc, {"what": "ingest start"})

    def _forget_parent(self) -> None:
        """Forked from a process that ingested: none of its threads came along, and a lock
        one of them held would stay held here, so start from a clean book."""
        self.book = PriceBook(self.symbols, self.settings.ws_ring_size)
        self.backfiller = self._new_backfiller()
        self.candles = CandleFeed(self.settings, self.book, self._may_call_rest, report_error)
        self.updates, self.twins = UpdateFilter(), TwinFrames()
        self.upstream = self.bridge = self._ticker = None
        self.started = False
        self.stats.connected = False
        self._upstream_lock = threading.Lock()
        self._ingest_lock = threading.Lock()
        self._stop = threading.Event()

    def running_here(self) -> bool:
        """True when ingest was started in this very process (not inherited through a fork)."""
        return self.started and self._pid == os.getpid()

    def start(self) -> None:
        """Start ingesting: directly, or through the Redis leadership when REDIS_URL is set.

        INGEST_ENABLED=0 never holds the Binance connection: with Redis the process only
        serves what the leader publishes; without Redis it has nothing to serve.
        """
        if self.started:
            return
        self.started = True
        self._pid = os.getpid()
        self.start_error = None
        self._stop.clear()
        self.book.new_epoch()  # here, in the serving process: workers forked from one app differ
        if self.settings.redis_url:
            self.bridge = self._bridge(self.settings.redis_url)
            self.bridge.start()
        elif self.settings.ingest_enabled:
            self._start_upstream()
        self.candles.start(self.bridge, self.settings.price_redis_ttl_seconds)
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="ws-metrics")
        self._ticker.start()
        self.clock.start()

    def stop(self) -> None:
        """Close the upstream connection, release the lock, end every SSE stream."""
        self._stop.set()
        self.clock.stop()
        self.book.close()
        self.backfiller.stop()
        self.candles.stop()
        self._stop_upstream()  # before the lock goes: the next leader's connection is then the only one
        if self.bridge is not None:
            self.bridge.stop()

    def _bridge(self, redis_url: str) -> RedisBridge:
        """The Redis bridge; a follower that hears no leader for half the stale threshold
        ingests on its own (connecting takes well under the other half)."""
        lock_ttl = self.settings.ws_leader_lock_ttl_seconds
        return RedisBridge(
            redis_url,
            self.book,
            self._on_role,
            prefix=self.settings.redis_key_prefix,
            lock_ttl=lock_ttl,
            price_ttl=self.settings.price_redis_ttl_seconds,
            silence=max(0.2, self.stale_after / 2),
            min_solo=min(5.0, lock_ttl),
            report_error=report_error,
            lead=self.settings.ingest_enabled,
        )

    def _on_role(self, role: str) -> None:
        """Hold the upstream connections as leader (WS_CONNECTIONS) or solo (one), never as follower."""
        if role in INGESTING:
            self._start_upstream(1 if role == SOLO else self.settings.ws_connections)
        else:
            self._stop_upstream()

    def _start_upstream(self, lines: int | None = None) -> None:
        lines = self.settings.ws_connections if lines is None else lines
        with self._upstream_lock:
            if self._stop.is_set():
                return
            if self.upstream is not None:  # leader <-> solo: keep what delivers, change the count
                self.upstream.use_lines(lines)
                return
            upstream = UpstreamManager(
                self.url,
                self.handle_frame,
                self.stats,
                replace(self._upstream_settings(), connections=lines),
                on_gap=self._on_gap,
                report_error=report_error,
            )
            upstream.start()
            self.candles.heal_known_holes()  # a follower taking over: what the last holder left
            self.watch.start(time.time())
            # Published once its thread runs: alive() would see a manager not yet started as
            # one whose thread died, and /health answered 503 during a leadership change.
            self.upstream = upstream

    def _on_gap(self) -> None:
        if self.settings.ws_backfill_enabled:
            self.backfiller.trigger()

    def _stop_upstream(self) -> None:
        with self._upstream_lock:
            upstream, self.upstream = self.upstream, None
        self.watch.stop()
        if upstream is not None:
            upstream.stop()

    def _upstream_settings(self) -> UpstreamSettings:
        s = self.settings
        return UpstreamSettings(
            stale_after=self.stale_after,
            max_age=s.ws_max_connection_age_seconds,
            backoff_base=s.ws_backoff_base_seconds,
            backoff_cap=s.ws_backoff_cap_seconds,
            backoff_reset_after=s.ws_backoff_reset_seconds,
            attempt_limit=s.ws_connect_attempts_per_5_min,
            overlap=s.ws_rotation_overlap_seconds,
            connections=s.ws_connections,
            stagger=s.ws_line_stagger_seconds,
        )

    # ---- background tick: Prometheus sync and message rate --------------------------
    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._rates.append((time.monotonic(), self.stats.total_messages()))
                self._heal_silent_streams()
                self.metrics.sync(
                    self._price_times,
                    leader=self.holds_upstream(),
                    stale_quotes=self.book.stale_quotes,
                    watch=self.watch,
                )
                self.latency.flush()
                self.candle_metrics.sync(self.candles.builder)
            except Exception as exc:
                log.exception("metrics tick failed")
                report_error(exc, {"what": "metrics tick"})

    def _heal_silent_streams(self) -> None:
        """A stream silent while the others deliver: reconnect the lines (make-before-break)."""
        upstream = self.upstream
        if self.watch.check(time.time()) and upstream is not None:
            log.warning(
                "streams silent for %.0f s while the feed delivers: %s; reconnecting",
                self.watch.silence,
                ", ".join(self.watch.silent[:10]),
            )
            upstream.rotate()

    def _price_times(self) -> dict[str, float]:
        return {s: r.received_at for s, r in self.book.snapshot().items()}

    def messages_per_second(self) -> float:
        """Frames per second over the last ten seconds."""
        if len(self._rates) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._rates[0], self._rates[-1]
        return round((n1 - n0) / max(1e-9, t1 - t0), 2)

    # ---- state for /health and /stats ------------------------------------------------
    @property
    def role(self) -> str:
        """`standalone` (no Redis), `leader` (holds upstream), `follower`, or `solo` (Redis
        or the leader unreachable: ingesting on its own connection)."""
        if self.bridge is None:
            return "standalone"
        return self.bridge.role

    def _may_call_rest(self) -> bool:
        """Candles' REST calls: never from a follower (the leader's candles are served there)."""
        return self.role != "follower"

    def holds_upstream(self) -> bool:
        """True while this process runs the upstream as the leader, or alone without Redis."""
        return self.upstream is not None and self.role != "follower"

    def alive(self) -> bool:
        """False when a thread that must run has died (the process cannot serve fresh data)."""
        if not self.started:
            return True
        upstream = self.upstream
        if upstream is not None and not upstream.alive and not self._stop.is_set():
            return False
        return self.bridge is None or self.bridge.alive or self._stop.is_set()

    # ---- its verdict for /health and /readyz ----------------------------------------
    def register_health(self, health: HealthCheck) -> None:
        """Add this service's checks: ingest (critical), upstream (degraded at worst), price (/readyz)."""
        health.add_check("ingest", self.ingest_health, critical=True)
        health.add_check("upstream", self.upstream_health, critical=False)
        health.add_readiness("price", self.price_ready)

    def ingest_health(self) -> tuple[str, object]:
        """Critical: down whenever this serving process has no running ingest."""
        if self.start_error is not None:
            return "down", f"ingest did not start: {self.start_error}"
        if not self.running_here():
            return "down", "ingest not running in this process"
        if not self.settings.ingest_enabled and not self.settings.redis_url:
            return "down", "INGEST_ENABLED=0 without REDIS_URL: nothing feeds this process"
        if not self.alive():
            return "down", "an ingest thread died"
        return "ok", self.role

    def price_ready(self) -> tuple[bool, object]:
        """Ready: this process's book holds a price no older than PRICE_STALE_SECONDS."""
        age = self.newest_update_age()
        return age is not None and age <= self.stale_after, {"newest_price_age_seconds": age}

    def upstream_health(self) -> tuple[str, dict[str, object]]:
        """Feed freshness: degraded while disconnected or silent longer than the stale limit."""
        age = self.newest_update_age()
        detail = self._feed_detail(age)
        silent = self.watch.silent
        if silent:
            detail["silent_streams"] = list(silent)
        fresh = age is not None and age <= self.stale_after
        ok = fresh and not silent and (self.role == "follower" or detail["connected"])
        return ("ok" if ok else "degraded"), detail

    def _feed_detail(self, age: float | None) -> dict[str, object]:
        """While the feed cannot connect, says why: the upstream host (never credentials), the
        last error, and how to run offline when the host cannot be resolved."""
        stats = self.stats
        host = host_of(self.settings.binance_ws_url)
        detail: dict[str, object] = {
            "role": self.role,
            "host": host,
            "connected": self.upstream is not None and stats.connected,
            "last_message_age_seconds": None if (a := stats.last_message_age()) is None else round(a, 3),
            "newest_price_age_seconds": age,
            "reconnects": stats.reconnects,
        }
        upstream = self.upstream
        if upstream is not None:
            state = upstream.status()
            detail.update(
                lines=state["lines"],
                last_error=state["last_error"],
                last_error_age_seconds=state["last_error_age_seconds"],
            )
            if state["unresolved"]:
                detail["hint"] = OFFLINE_HINT.format(host=host)
        if self.bridge is not None:
            detail["redis"] = "ok" if self.bridge.healthy else "unreachable"
        return detail

    def newest_update_age(self) -> float | None:
        """Seconds since the book last changed (any symbol), None before the first price."""
        times = [r.received_at for r in self.book.snapshot().values()]
        return round(time.time() - max(times), 3) if times else None

    def summary(self) -> dict[str, Any]:
        """The counters /stats shows."""
        s = self.stats
        age = s.last_message_age()
        return {
            "role": self.role,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - s.started_at, 3),
            "messages_total": s.total_messages(),
            "messages_by_type": dict(s.messages),
            "messages_per_second": self.messages_per_second(),
            "parse_errors": s.parse_errors,
            "unknown_fields": s.unknown_fields,
            "handler_errors": s.handler_errors,
            "duplicates_dropped": self.updates.duplicates,
            "twin_frames_skipped": self.twins.skipped,
            "late_updates": self.updates.late,
            "reconnects": s.reconnects,
            "rotations": s.rotations,
            "watchdog_reconnects": s.watchdog_reconnects,
            "connection_attempts": s.connection_attempts,
            "backfills": s.backfills,
            "backfill_errors": s.backfill_errors,
            "connected": self.upstream is not None and s.connected,
            "upstream_connections": 0 if (up := self.upstream) is None else up.open_connections,
            "last_message_age_seconds": None if age is None else round(age, 3),
            "symbols_with_price": len(self.book.snapshot()),
            "sse_resyncs": s.sse_resyncs,
            "sse_dropped": s.sse_dropped,
            "sse_overflows": s.sse_overflows,
            "sse_write_timeouts": s.sse_write_timeouts,
            "stale_quotes_dropped": self.book.stale_quotes,
            "silent_streams": list(self.watch.silent),
            "stream_silences": self.watch.detected,
            "silence_reconnects": self.watch.heals,
            **self.candles.summary(),
            "latency": {
                **self.latency.summary(),
                "clock_offset_seconds": self.clock.offset,
                "clock_offset_round_trip_seconds": self.clock.round_trip,
            },
        }
