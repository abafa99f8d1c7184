"""Latency from the exchange: a frame's event time → its receipt → each answer serving it.

The event time (`E`) is the exchange's clock, receipt and serving are this host's: every
figure that starts at the event time includes the skew between the two clocks.
`ClockCheck` measures that offset against Binance's REST server time (`GET /api/v3/time`,
weight 1) now and then and exports it, so an operator can tell a late feed from a wrong
clock. A negative delay (the exchange's clock ahead of ours) is recorded as 0.

The hot paths (the reader thread, `/price`, SSE writes) only append to deques (atomic, no
lock: a fraction of a microsecond per frame); the metrics tick drains them into the
Prometheus histograms, as for the ingest counters (stats.py), and into the last `RECENT`
samples per stream type and path, whose p50/p99 /stats shows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .binance.rest import BinanceClient, BinanceError
from .book import PriceRecord

log = logging.getLogger("websocket_streaming.latency")

# From a few ms (the network to Binance) to tens of seconds (a stalled feed).
FEED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RECENT = 1024  # samples per kind kept for /stats's quantiles
PRICE, SSE = "price", "sse"  # the `path` label: a /price answer or an SSE write
STALE_MARK = '"stale":true'
T = TypeVar("T")


class LatencyTracker:
    """Delays measured on the hot paths, recorded into Prometheus by `flush`."""

    def __init__(self, metrics: Any) -> None:
        self._exchange = metrics.histogram(
            "sardag_feed_exchange_delay_seconds",
            "Exchange event time to receipt of the frame, per stream type (includes clock skew)",
            ["type"],
            FEED_BUCKETS,
        )
        self._served = metrics.histogram(
            "sardag_price_served_delay_seconds",
            "Receipt of the frame (by the leader) to a /price answer or SSE write of its price",
            ["path"],
            FEED_BUCKETS,
        )
        self._end_to_end = metrics.histogram(
            "sardag_price_exchange_to_served_seconds",
            "Exchange event time to a /price answer or SSE write (includes clock skew)",
            ["path"],
            FEED_BUCKETS,
        )
        self._answers = metrics.counter("sardag_price_answers_total", "/price answers by stale flag", ["stale"])
        for stale in ("true", "false"):  # both exported from the start: the SLO ratio is 0, not absent
            self._answers.labels(stale=stale).inc(0)
        self._lock = threading.Lock()  # flush against summary; the hot paths take none
        self._received: deque[tuple[str, float]] = deque()
        self._served_samples: deque[tuple[str, float, float | None]] = deque()
        self._stale: deque[str] = deque()
        self._recent: dict[str, deque[float]] = {}

    def received(self, kind: str, event_time_ms: int | None, received_at: float) -> None:
        """One frame of stream type `kind`, stamped `event_time_ms` by the exchange."""
        if event_time_ms is not None:
            self._received.append((kind, received_at - event_time_ms / 1000))

    def served(self, path: str, records: Iterable[PriceRecord], now: float | None = None) -> None:
        """Prices of `records` written to a client now, by `/price` or SSE."""
        now = time.time() if now is None else now
        self._served_samples.extend(
            (path, now - r.received_at, None if r.event_time is None else now - r.event_time / 1000)
            for r in records
        )

    def answered(self, record: PriceRecord, body: str, now: float) -> None:
        """One `/price` answer: its latency, and whether it told the client `stale`."""
        self.served(PRICE, (record,), now)
        self._stale.append("true" if STALE_MARK in body else "false")

    def _remember(self, key: str, delay: float) -> None:
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=RECENT)
        recent.append(delay)

    def flush(self) -> None:
        """Record every sample taken since the last flush into the histograms."""
        with self._lock:
            for kind, delay in _drain(self._received):
                delay = max(0.0, delay)
                self._exchange.labels(type=kind).observe(delay)
                self._remember(kind, delay)
            for path, delay, total in _drain(self._served_samples):
                delay = max(0.0, delay)
                self._served.labels(path=path).observe(delay)
                self._remember(f"served:{path}", delay)
                if total is not None:
                    self._end_to_end.labels(path=path).observe(max(0.0, total))
            stale = Counter(_drain(self._stale))
        for flag, count in stale.items():
            self._answers.labels(stale=flag).inc(count)

    def summary(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """p50/p99 of the recent samples: exchange → received per stream type, received → served per path."""
        self.flush()  # what the tick has not taken yet
        with self._lock:
            recent = {key: sorted(values) for key, values in self._recent.items()}
        exchange = {k: _quantiles(v) for k, v in recent.items() if not k.startswith("served:")}
        served = {
            k.removeprefix("served:"): _quantiles(v) for k, v in recent.items() if k.startswith("served:")
        }
        return {"exchange_to_received": exchange, "received_to_served": served}


def _drain(queue: deque[T]) -> Iterator[T]:
    """Take items off the left until empty; appends racing with it are kept for later."""
    while True:
        try:
            yield queue.popleft()
        except IndexError:
            return


def _quantiles(ordered: list[float]) -> dict[str, float | int | None]:
    return {"p50": _rank(ordered, 0.5), "p99": _rank(ordered, 0.99), "samples": len(ordered)}


def _rank(ordered: list[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted values, in seconds rounded to the ms."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


class ClockCheck:
    """Measures Binance's clock against ours every `interval` seconds, while `active()`."""

    def __init__(
        self, client: BinanceClient, metrics: Any, interval: float, active: Callable[[], bool]
    ) -> None:
        self.client = client
        self.interval = interval
        self.active = active
        self.offset: float | None = None  # Binance's clock minus ours, seconds
        self.round_trip: float | None = None  # of the request that measured it: the offset's uncertainty
        self._gauge = metrics.gauge(
            "sardag_exchange_clock_offset_seconds",
            "Binance REST server time minus the local clock (midpoint of the request)",
            multiprocess_mode="livemostrecent",
        )
        self._stop = threading.Event()

    def start(self) -> None:
        """Measure now and every `interval` seconds, in a daemon thread (interval 0: never)."""
        if self.interval > 0:
            self._stop.clear()
            threading.Thread(target=self._run, daemon=True, name="ws-clock-check").start()

    def stop(self) -> None:
        """End the thread at its next wake-up."""
        self._stop.set()

    def _run(self) -> None:
        # Polled each second, measured every `interval`: a process that becomes the leader
        # measures within a second, not an interval later.
        due = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= due and self.active():
                self.measure()
                due = time.monotonic() + self.interval
            self._stop.wait(min(self.interval, 1.0))

    def measure(self) -> float | None:
        """One measurement; None (and the last value kept) when Binance did not answer."""
        before = time.time()
        try:
            server_ms = self.client.server_time()
        except (BinanceError, ValueError) as exc:  # unreachable, limited, or an answer not JSON
            log.warning("could not read Binance's server time: %s", exc)
            return None
        after = time.time()
        self.offset = round(server_ms / 1000 - (before + after) / 2, 4)
        self.round_trip = round(after - before, 4)
        self._gauge.set(self.offset)
        return self.offset
