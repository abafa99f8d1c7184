"""Redis sliding-window backend: one Lua script, one round trip, the server's clock.

Keys found over their limit are then rejected locally until their first slot frees (the
over-limit cache), so a client hammering far past its limit costs no Redis round trip.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import redis

from shared import tracing
from shared.rate_limiter.base import RateLimitResult
from shared.redis_conn import DirectConnections, pack

KEY_PREFIX = "sardag:rl:"
DEFAULT_OVER_LIMIT_KEYS = 10_000
# The script goes over DirectConnections, which redis' instrumentation does not see.
_SPAN_ATTRIBUTES = {"db.system": "redis", "db.operation.name": "EVALSHA", "db.redis.script": "sliding window"}

# Members are "<now_us>-<count>", with now_us printed in full: Lua's tostring keeps only 14
# significant digits (100 us today), and colliding members made ZADD overwrite an allowed
# hit. Unique because scripts run one at a time and the count grows within a microsecond.
# The reply is one string "allowed remaining reset_us now_us" (reset: when the oldest
# counted hit leaves the window): one line to parse instead of an array. A rejection
# changes nothing, so it skips ZADD and PEXPIRE.
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
if count > 1 or allowed == 0 then
  -- nil only when a tiny window's key expired while this script ran (a paused server)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  reset = oldest and tonumber(oldest) + window or now
end
if allowed == 1 then
  -- the newest member is `now`: keep the key until it leaves the window
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1)
end
return string.format('%d %d %.0f %.0f', allowed, limit - count, reset, now)
"""


class OverLimitCache:
    """Keys the store found over their limit, each until its first slot frees (bounded).

    Exact: a slot frees only when the oldest counted hit leaves the window, so no request
    for the key can be admitted before then. The deadline is measured from just before
    the store was asked, so it falls at or before the real one: a key is never refused
    locally after the store would admit it. Admissions are never decided here.
    """

    def __init__(self, max_keys: int = DEFAULT_OVER_LIMIT_KEYS, clock: Callable[[], float] = time.monotonic):
        self.max_keys = max_keys
        self._clock = clock
        self._until: dict[str, tuple[int, float, float]] = {}  # key -> (limit, until, reset_at)

    def __len__(self) -> int:
        return len(self._until)

    def get(self, key: str, limit: int) -> RateLimitResult | None:
        """The rejection to answer for `key` now, or None when the store must decide."""
        entry = self._until.get(key)
        if entry is None:
            return None
        now = self._clock()
        if entry[0] != limit or now >= entry[1]:
            self._until.pop(key, None)
            return None
        return RateLimitResult(False, limit, 0, entry[2], entry[1] - now)

    def add(self, key: str, result: RateLimitResult, asked_at: float) -> None:
        """Remember a rejection the store answered for `key` (asked at `asked_at`)."""
        if len(self._until) >= self.max_keys:
            self._evict(asked_at)
        self._until[key] = (result.limit, asked_at + result.retry_after, result.reset_at)

    def _evict(self, now: float) -> None:
        expired = [k for k, (_, until, _) in list(self._until.items()) if until <= now]
        for key in expired or list(self._until)[: max(1, self.max_keys // 10)]:
            self._until.pop(key, None)

    def clear(self) -> None:
        """Forget every key."""
        self._until.clear()


class RedisBackend:
    """Exact across every worker and instance sharing the Redis server."""

    name = "redis"

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = KEY_PREFIX,
        over_limit_keys: int = DEFAULT_OVER_LIMIT_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.over_limit = OverLimitCache(over_limit_keys, clock)
        self._clock = clock
        self._connections = DirectConnections(client)
        sha = hashlib.sha1(SLIDING_WINDOW_LUA.encode(), usedforsecurity=False).hexdigest().encode()
        self._head = pack(b"EVALSHA", sha, b"1")[len(b"*3\r\n") :]
        self._tails: dict[tuple[int, float], bytes] = {}

    def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Decide one request on the Redis server, unless `key` is known over its limit."""
        known = self.over_limit.get(key, limit)
        if known is not None:
            return known
        asked_at = self._clock()
        with tracing.span("EVALSHA rate limit", kind="client", attributes=_SPAN_ATTRIBUTES):
            allowed, remaining, reset_us, now_us = self.decide(key, limit, window).split()
        if allowed == b"1":
            return RateLimitResult(True, limit, int(remaining), int(reset_us) / 1e6, 0.0)
        reset, now = int(reset_us), int(now_us)
        result = RateLimitResult(False, limit, 0, reset / 1e6, (reset - now) / 1e6)
        self.over_limit.add(key, result, asked_at)
        return result

    def decide(self, key: str, limit: int, window: float) -> bytes:
        """The script's reply for one hit: b"allowed remaining reset_us now_us" (server clock)."""
        name = (self.prefix + key).encode()
        command = b"*6\r\n" + self._head + b"$%d\r\n%s\r\n" % (len(name), name) + self._tail(limit, window)
        try:
            return self._connections.call(command)  # type: ignore[no-any-return]
        except redis.exceptions.NoScriptError:
            self.client.script_load(SLIDING_WINDOW_LUA)  # a restarted or flushed server
            return self._connections.call(command)  # type: ignore[no-any-return]

    def _tail(self, limit: int, window: float) -> bytes:
        tail = self._tails.get((limit, window))
        if tail is None:
            args = (str(limit).encode(), str(int(window * 1_000_000)).encode())
            tail = self._tails[(limit, window)] = pack(*args)[len(b"*2\r\n") :]
        return tail

    def ping(self) -> None:
        """Raise unless the Redis server answers (for /health)."""
        self.client.ping()

    def clear(self) -> None:
        """Delete every key under this backend's prefix, and the local over-limit cache."""
        self.over_limit.clear()
        for key in self.client.scan_iter(match=self.prefix + "*", count=1000):
            self.client.delete(key)
