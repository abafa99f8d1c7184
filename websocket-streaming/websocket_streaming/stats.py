"""Ingest counters: plain integers on the hot path, copied into Prometheus by `sync`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .silence import StreamWatch


@dataclass
class IngestStats:
    """What the reader saw; written by the reader threads, read by /stats and /health."""

    started_at: float = field(default_factory=time.time)
    messages: Counter[str] = field(default_factory=Counter)
    parse_errors: int = 0
    unknown_fields: int = 0
    handler_errors: int = 0
    reconnects: int = 0
    rotations: int = 0
    watchdog_reconnects: int = 0
    connection_attempts: int = 0
    backfills: int = 0
    backfill_errors: int = 0
    sse_resyncs: int = 0
    sse_dropped: int = 0  # events a slow subscriber's bounded queue dropped
    sse_overflows: int = 0  # streams closed because their queue overflowed
    sse_write_timeouts: int = 0  # streams cut because a write stayed blocked
    connected: bool = False
    last_message_at: float | None = None

    def total_messages(self) -> int:
        """All frames received, of every type."""
        return sum(self.messages.values())

    def last_message_age(self) -> float | None:
        """Seconds since the last frame, None before the first."""
        return None if self.last_message_at is None else time.time() - self.last_message_at


class MetricsSync:
    """Copies IngestStats into the Prometheus metrics as deltas, from a background tick."""

    def __init__(self, stats: IngestStats, metrics: Any) -> None:
        self.stats = stats
        self._messages = metrics.counter(
            "sardag_ws_messages_total", "WebSocket frames received, by type", ["type"]
        )
        self._parse_errors = metrics.counter(
            "sardag_ws_parse_errors_total", "WebSocket frames that could not be parsed"
        )
        self._reconnects = metrics.counter(
            "sardag_ws_reconnects_total", "Upstream reconnect attempts after a lost connection"
        )
        self._connected = metrics.gauge("sardag_ws_connected", "1 while the upstream WebSocket is connected")
        self._leader = metrics.gauge(
            "sardag_ws_leader", "1 while this process holds the upstream (Redis lock, or alone without Redis)"
        )
        self._sse_dropped = metrics.counter(
            "sardag_sse_dropped_total", "SSE events dropped from slow subscribers' bounded queues"
        )
        self._sse_closed = metrics.counter(
            "sardag_sse_closed_total",
            "SSE streams closed by the server: queue overflow or a write blocked past its timeout",
            ["reason"],
        )
        self._stale_quotes = metrics.counter(
            "sardag_ws_stale_quotes_total", "bookTicker updates dropped: not newer by `u` than the quote held"
        )
        self._silent = metrics.gauge(
            "sardag_ws_silent_streams", "Subscribed streams silent while the others on the feed deliver"
        )
        self._silences = metrics.counter(
            "sardag_ws_stream_silences_total",
            "Times a subscribed stream went silent while the others delivered",
        )
        self._updated = metrics.gauge(
            "sardag_price_updated_timestamp_seconds", "Unix time of the last price update", ["symbol"]
        )
        self._seen: dict[str, int] = {}
        # Export the counters at 0 from the start, so dashboards show 0, not "no data".
        self._parse_errors.inc(0)
        self._reconnects.inc(0)
        self._sse_dropped.inc(0)
        self._stale_quotes.inc(0)
        self._silences.inc(0)
        for reason in ("overflow", "write_timeout"):
            self._sse_closed.labels(reason=reason).inc(0)

    def sync(
        self,
        latest: Callable[[], dict[str, float]],
        leader: bool = False,
        stale_quotes: int = 0,
        watch: StreamWatch | None = None,
    ) -> None:
        """Push every counter's growth since the last sync, the gauges and price times."""
        for kind, count in list(self.stats.messages.items()):
            self._inc(self._messages.labels(type=kind), f"m:{kind}", count)
        self._inc(self._parse_errors, "parse", self.stats.parse_errors)
        self._inc(self._reconnects, "reconnects", self.stats.reconnects)
        self._inc(self._sse_dropped, "sse_dropped", self.stats.sse_dropped)
        self._inc(self._sse_closed.labels(reason="overflow"), "sse_overflows", self.stats.sse_overflows)
        self._inc(
            self._sse_closed.labels(reason="write_timeout"), "sse_write_timeouts", self.stats.sse_write_timeouts
        )
        self._inc(self._stale_quotes, "stale_quotes", stale_quotes)
        if watch is not None:
            self._silent.set(len(watch.silent))
            self._inc(self._silences, "silences", watch.detected)
        self._connected.set(1 if self.stats.connected else 0)
        self._leader.set(1 if leader else 0)
        for symbol, when in latest().items():
            self._updated.labels(symbol=symbol).set(when)

    def _inc(self, metric: Any, key: str, total: int) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            metric.inc(delta)
            self._seen[key] = total
