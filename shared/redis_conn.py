"""Redis connections with short timeouts, and the circuit breaker shared by its users."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

FAST_TIMEOUT = 0.05  # seconds: a request never waits longer than this on a sick Redis
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def redis_client(url: str, timeout: float = FAST_TIMEOUT, **kwargs: object) -> redis.Redis:
    """A client with bounded connect/read timeouts and no hidden retries."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        **kwargs,  # type: ignore[arg-type]
    )


class CircuitBreaker:
    """Open after a failure; after `reset_seconds` let one probe through to close it again."""

    def __init__(
        self,
        name: str,
        reset_seconds: float = 5.0,
        *,
        store: str = "redis",
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.store = store
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
        self._log.warning("%s reachable again; %s back on it", self.store, self.name)

    def record_failure(self, error: BaseException) -> None:
        """Open (or keep open) the breaker, logging once per outage."""
        with self._lock:
            first = self._opened_at is None
            self._opened_at, self._probing = self._clock(), False
        if first:
            self._log.warning("%s unreachable (%s); %s falls back to in-process", self.store, error, self.name)
