"""database-service's per-app state (counters, start time, error log) and its accessor."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from prometheus_client import Counter

from shared.metrics import ServiceMetric

EXTENSION = "database_service"
log = logging.getLogger("database_service")

COUNTS_MAX_AGE = 10.0  # seconds /stats may answer counts from before (an exact count scans the tables)


class Recent:
    """A value recomputed at most every `max_age` seconds, by one thread at a time.

    `/stats` is public: computed per request, its exact count(*) (hundreds of ms at
    millions of rows) would let any client keep the database busy.
    """

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._value: Any = None
        self._taken = -float("inf")
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Recompute at the next `get` (this process changed what the value counts)."""
        self._taken = -float("inf")

    def get(self, compute: Callable[[], Any]) -> Any:
        """The value, recomputed first when older than `max_age`."""
        if time.monotonic() - self._taken < self.max_age:
            return self._value
        with self._lock:  # the others wait for this one's answer rather than count too
            if time.monotonic() - self._taken >= self.max_age:
                self._value, self._taken = compute(), time.monotonic()
            return self._value


@dataclass
class ReasonLog:
    """Logs why the database fails: a new reason at once, the same one at most every `interval` s.

    During an outage every request fails the same way; one line per request would bury the
    cause, and none would leave the operator with nothing but 503s in the access log.
    """

    interval: float = 10.0
    last: tuple[str, float] = ("", -math.inf)

    def report(self, reason: str) -> None:
        """Log `reason` unless it was logged less than `interval` seconds ago."""
        now = time.monotonic()
        if reason != self.last[0] or now - self.last[1] >= self.interval:
            self.last = (reason, now)
            log.warning("database unavailable, answering 503: %s", reason)


@dataclass
class ServiceState:
    """Per-app state of database-service: its metrics, start time and storage error log."""

    signals_saved: ServiceMetric[Counter]
    trades_tracked: ServiceMetric[Counter]
    started: float = field(default_factory=time.monotonic)
    storage_errors: ReasonLog = field(default_factory=ReasonLog)
    stats_counts: Recent = field(default_factory=lambda: Recent(COUNTS_MAX_AGE))

    def stored(self, signals: int = 0, trades: int = 0) -> None:
        """Count rows this worker stored; its /stats counts them from the next call on."""
        if signals:
            self.signals_saved.inc(signals)
        if trades:
            self.trades_tracked.inc(trades)
        self.stats_counts.invalidate()


def service_state(app: Flask | None = None) -> ServiceState:
    """The state of database-service `app` (default: the current app)."""
    state: ServiceState = (app or current_app).extensions[EXTENSION]
    return state
