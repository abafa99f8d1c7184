"""Redis connections with short timeouts, and the circuit breaker shared by its users."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from flask import Flask

    from shared.metrics import Metrics

FAST_TIMEOUT = 0.05  # seconds: a request never waits longer than this on a sick Redis
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def redis_client(url: str, timeout: float = FAST_TIMEOUT, **kwargs: Any) -> redis.Redis:
    """A client with bounded connect/read timeouts and no hidden retries."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        **kwargs,
    )


def fallback_counter(metrics: Metrics, component: str) -> Callable[[], None]:
    """Count one call of `component` served in-process because Redis was unreachable."""
    counter = metrics.counter(
        "redis_fallback_total",
        "Calls served in-process because Redis was unreachable, by component",
        ("component",),
    )
    inc: Callable[[], None] = counter.labels(component=component).inc
    return inc


class CircuitBreaker:
    """Open after a failure; after `reset_seconds` let one probe through to close it again."""

    def __init__(
        self,
        name: str,
        reset_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._log = logger or logging.getLogger("shared.redis")
        self._lock = threading.Lock()
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        """True while calls should skip Redis."""
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether this call may try Redis (closed, or the single half-open probe)."""
        if self._opened_at is None:
            return True
        with self._lock:
            due = self._clock() - self._opened_at >= self.reset_seconds
            if due and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        """Close the breaker (logging once if it was open)."""
        if self._opened_at is None:
            return
        with self._lock:
            self._opened_at, self._probing = None, False
        self._log.warning("redis reachable again; %s back on redis", self.name)

    def record_failure(self, error: BaseException) -> None:
        """Open (or keep open) the breaker, logging once per outage."""
        with self._lock:
            first = self._opened_at is None
            self._opened_at, self._probing = self._clock(), False
        if first:
            self._log.warning("redis unreachable (%s); %s falls back to in-process", error, self.name)


BREAKER_EXTENSION = "sardag_redis_breaker"


def app_breaker(app: Flask) -> CircuitBreaker:
    """The one breaker of `app`'s Redis users (rate limiter, cache).

    Shared, so that a request which uses both waits on a hung Redis once, not once each.
    """
    breaker: CircuitBreaker = app.extensions.setdefault(
        BREAKER_EXTENSION, CircuitBreaker("rate limiter and cache")
    )
    return breaker


def probe(client: redis.Redis, breaker: CircuitBreaker) -> bool:
    """Whether Redis answers a PING now (for /health), updating `breaker` with the outcome.

    A worker whose requests have not touched Redis lately would otherwise report a closed
    breaker as healthy during an outage. Skipped (False) while the breaker is open.
    """
    if not breaker.allow():
        return False
    try:
        client.ping()
    except REDIS_ERRORS as exc:
        breaker.record_failure(exc)
        return False
    breaker.record_success()
    return True
