"""Fail open: a shared store (Redis, or the host store) decides while it answers; the
in-process backend decides while it fails, behind the app's circuit breaker."""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.rate_limiter.base import Backend, RateLimitResult
from shared.redis_conn import REDIS_ERRORS, CircuitBreaker, probe


class FailoverBackend:
    """A shared store first; the in-process backend while it fails (fail open)."""

    def __init__(
        self,
        primary: Backend,
        fallback: Backend,
        breaker: CircuitBreaker,
        on_fallback: Callable[[], None] = lambda: None,
        errors: tuple[type[BaseException], ...] = REDIS_ERRORS,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.name = primary.name
        self._on_fallback = on_fallback
        self._errors = errors

    @property
    def degraded(self) -> bool:
        """True while requests are limited in-process because the shared store failed."""
        return self.breaker.is_open

    def ping(self) -> None:
        """Always answers: while the shared store fails, this process decides."""

    def reachable(self) -> bool:
        """Whether the shared store answers now (a ping unless the breaker is open)."""
        return probe(self.primary.ping, self.breaker, self._errors)

    def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Decide on the shared store, or in-process while the breaker is open."""
        if self.breaker.allow():
            try:
                result = self.primary.hit(key, limit, window)
            except self._errors as exc:
                self.breaker.record_failure(exc)
            else:
                self.breaker.record_success()
                return result
        self._on_fallback()
        return self.fallback.hit(key, limit, window)

    def clear(self) -> None:
        """Clear both stores."""
        self.fallback.clear()
        try:
            self.primary.clear()
        except self._errors as exc:
            logging.getLogger("shared.rate_limiter").warning("could not clear %s: %s", self.name, exc)
