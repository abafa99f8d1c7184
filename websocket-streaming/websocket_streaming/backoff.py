"""Reconnect pacing: exponential backoff with full jitter, and Binance's attempt budget."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable


class Backoff:
    """Exponential backoff with full jitter: delay n is uniform in [0, min(cap, base * 2**n)]."""

    def __init__(
        self, base: float = 0.5, cap: float = 30.0, rng: Callable[[float, float], float] = random.uniform
    ) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._uniform = rng

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        ceiling = min(self.cap, self.base * 2 ** min(self.failures, 32))
        self.failures += 1
        return self._uniform(0.0, ceiling)

    def reset(self) -> None:
        """Start over after a connection proved healthy."""
        self.failures = 0


class AttemptWindow:
    """At most `limit` connection attempts in any sliding `window` seconds (Binance: 300/5 min)."""

    def __init__(
        self, limit: int = 300, window: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._attempts: deque[float] = deque()

    def wait_time(self) -> float:
        """Seconds to wait before another attempt fits in the window (0 = go now)."""
        now = self._expire()
        if len(self._attempts) < self.limit:
            return 0.0
        return self._attempts[0] + self.window - now

    def spacing(self) -> float:
        """Seconds to wait so that attempts made without backoff never use the budget up.

        0 while less than half of the budget is used; past that, attempts are spread at
        half the budget's average rate (2 s apart for 300 per 5 minutes), so a feed that
        keeps dropping cannot fill the window and leave nothing for the next failure.
        """
        now = self._expire()
        if len(self._attempts) < self.limit // 2 or not self._attempts:
            return 0.0
        return max(0.0, self._attempts[-1] + 2 * self.window / self.limit - now)

    def _expire(self) -> float:
        now = self._clock()
        while self._attempts and now - self._attempts[0] >= self.window:
            self._attempts.popleft()
        return now

    def record(self) -> None:
        """Count one attempt made now."""
        self._attempts.append(self._clock())

    def __len__(self) -> int:
        return len(self._attempts)
