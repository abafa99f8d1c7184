"""Redis sliding-window backend: one Lua script, one round trip, the server's clock."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from shared.rate_limiter.base import Backend, RateLimitResult
from shared.redis_conn import REDIS_ERRORS, CircuitBreaker

KEY_PREFIX = "sardag:rl:"

# Members are "<now_us>-<count>", with now_us printed in full: Lua's tostring keeps only 14
# significant digits (100 us today), and colliding members made ZADD overwrite an allowed
# hit. Unique because scripts run one at a time and the count grows within a microsecond.
SLIDING_WINDOW_LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, string.format('%.0f-%d', now, count))
  count = count + 1
  allowed = 1
end
local reset = now + window
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if oldest[2] then
  reset = tonumber(oldest[2]) + window
end
if count > 0 then
  -- the newest member is at most `now`: keep the key until it leaves the window
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1)
end
return {allowed, limit - count, string.format('%.0f', reset), string.format('%.0f', now)}
"""


class RedisBackend:
    """Exact across every worker and instance sharing the Redis server."""

    name = "redis"

    def __init__(self, client: redis.Redis, prefix: str = KEY_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._script = client.register_script(SLIDING_WINDOW_LUA)

    def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Decide one request on the Redis server (raises on Redis errors)."""
        allowed, remaining, reset_us, now_us = self._script(
            keys=[self.prefix + key], args=[limit, int(window * 1_000_000)]
        )
        reset_at, now = int(reset_us) / 1e6, int(now_us) / 1e6
        return RateLimitResult(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(0, int(remaining)),
            reset_at=reset_at,
            retry_after=0.0 if allowed else max(0.0, reset_at - now),
        )

    def clear(self) -> None:
        """Delete every key under this backend's prefix."""
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            self.client.delete(key)


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
