"""JSON cache with TTL under a key prefix: Redis when configured, in-process LRU otherwise."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from flask import Flask, current_app

from shared.health_check import get_health
from shared.lifecycle import required
from shared.metrics import get_metrics
from shared.redis_conn import REDIS_ERRORS, CircuitBreaker, app_breaker, fallback_counter, probe, redis_client

EXTENSION = "sardag_cache"
F = TypeVar("F", bound=Callable[..., Any])


class LocalCache:
    """A thread-safe LRU of JSON-able values with per-entry expiry."""

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str) -> str | None:
        """The stored text, or None when missing or expired."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry[0] <= self._clock():
                self._data.pop(key, None)
                return None
            self._data.move_to_end(key)
            return entry[1]

    def set(self, key: str, text: str, ttl: float) -> None:
        """Store `text` for `ttl` seconds, evicting the least recently used entry."""
        with self._lock:
            self._data[key] = (self._clock() + ttl, text)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def delete(self, key: str) -> None:
        """Forget `key`."""
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key: str) -> int:
        """Increment an integer counter that never expires."""
        with self._lock:
            _, text = self._data.get(key, (float("inf"), "0"))
            value = int(text) + 1
            self._data[key] = (float("inf"), str(value))
            return value


class Cache:
    """Flask extension: JSON get/set/delete/incr on Redis, falling back to `LocalCache`."""

    def __init__(self, app: Flask | None = None) -> None:
        self.local = LocalCache()
        self.redis: redis.Redis | None = None
        self.breaker = CircuitBreaker("cache")
        self.prefix = "sardag:cache:"
        self._on_fallback: Callable[[], None] = lambda: None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Connect to `REDIS_URL` when set; register a non-critical health check."""
        metrics, health = get_metrics(app, "Cache"), get_health(app, "Cache")
        self.prefix = f"sardag:cache:{app.config['SERVICE_NAME']}:"
        url = app.config.get("REDIS_URL")
        if url:
            self.redis = redis_client(url, timeout=app.config.get("REDIS_TIMEOUT_SECONDS", 0.05))
            self.breaker = app_breaker(app)
            self._on_fallback = fallback_counter(metrics, "cache")
            health.add_check("cache_redis", self.health, critical=False)
        app.extensions[EXTENSION] = self

    @property
    def backend(self) -> str:
        """`redis` or `memory`."""
        return "redis" if self.redis is not None else "memory"

    def get(self, key: str) -> Any:
        """The cached value, or None."""
        text = self._call(lambda r: r.get(self.prefix + key), lambda: self.local.get(key))
        return None if text is None else json.loads(text)

    def set(self, key: str, value: Any, ttl: float = 60.0) -> None:
        """Cache `value` (JSON-serialisable) for `ttl` seconds."""
        text = json.dumps(value, separators=(",", ":"), default=str)
        self.local.set(key, text, ttl)
        self._call(lambda r: r.set(self.prefix + key, text, px=max(1, int(ttl * 1000))), lambda: None)

    def delete(self, key: str) -> None:
        """Remove `key`."""
        self.local.delete(key)
        self._call(lambda r: r.delete(self.prefix + key), lambda: None)

    def incr(self, key: str) -> int:
        """Increment a shared counter (e.g. a generation number used in cache keys)."""
        return int(self._call(lambda r: r.incr(self.prefix + key), lambda: self.local.incr(key)))

    def _call(self, on_redis: Callable[[redis.Redis], Any], on_local: Callable[[], Any]) -> Any:
        if self.redis is None or not self.breaker.allow():
            if self.redis is not None:
                self._on_fallback()
            return on_local()
        try:
            result = on_redis(self.redis)
        except REDIS_ERRORS as exc:
            self.breaker.record_failure(exc)
            self._on_fallback()
            return on_local()
        self.breaker.record_success()
        return result

    def health(self) -> tuple[str, str]:
        """`degraded` while the cache runs in-process because Redis is unreachable."""
        if self.redis is not None and probe(self.redis.ping, self.breaker):
            return "ok", "redis"
        return "degraded", "redis unreachable; in-process cache"


def get_cache(app: Flask | None = None) -> Cache:
    """The cache extension of `app` (default: the current app)."""
    return required(app or current_app, EXTENSION, Cache, "get_cache()")


def cached(ttl: float, key: Callable[..., str] | None = None) -> Callable[[F], F]:
    """Cache a function's JSON-able result for `ttl` seconds, keyed by its arguments."""

    def decorator(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = key(*args, **kwargs) if key else f"{func.__qualname__}:{args!r}:{sorted(kwargs.items())!r}"
            cache = get_cache()
            hit = cache.get(name)
            if hit is not None:
                return hit
            value = func(*args, **kwargs)
            cache.set(name, value, ttl)
            return value

        return cast(F, wrapper)

    return decorator
