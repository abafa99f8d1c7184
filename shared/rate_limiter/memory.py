"""In-process sliding-window backend: thread-safe, LRU-bounded, monotonic clock."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from shared.rate_limiter.base import RateLimitResult

DEFAULT_MAX_KEYS = 100_000


class MemoryBackend:
    """Keeps, per key, the times of the requests allowed within the window."""

    name = "memory"

    def __init__(
        self,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Allow when fewer than `limit` hits were allowed for `key` in the last `window` s."""
        with self._lock:
            now = self._clock()
            stamps = self._window_for(key)
            cutoff = now - window
            while stamps and stamps[0] <= cutoff:
                stamps.popleft()
            allowed = len(stamps) < limit
            if allowed:
                stamps.append(now)
            frees_in = stamps[0] + window - now if stamps else window
        return RateLimitResult(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - len(stamps)),
            reset_at=self._wall() + frees_in,
            retry_after=0.0 if allowed else frees_in,
        )

    def _window_for(self, key: str) -> deque[float]:
        stamps = self._windows.get(key)
        if stamps is None:
            stamps = self._windows[key] = deque()
            if len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(key)
        return stamps

    def ping(self) -> None:
        """Always answers: the store is this process's memory."""

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._windows.clear()
