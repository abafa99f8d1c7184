"""The interface every rate-limit storage backend implements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """The decision for one request, with what the response headers report."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the oldest counted request leaves the window
    retry_after: float  # seconds until a slot frees (0 when allowed)

    @property
    def retry_after_header(self) -> str:
        """`Retry-After`: whole seconds, rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))

    @property
    def reset_header(self) -> str:
        """`X-RateLimit-Reset`: epoch seconds, rounded up."""
        return str(math.ceil(self.reset_at))


class Backend(Protocol):
    """A sliding-window store: allow a hit when fewer than `limit` were allowed in `window`."""

    name: str

    def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Decide one request for `key` and record it when allowed."""
        ...

    def ping(self) -> None:
        """Raise unless the store answers now (for /health)."""
        ...

    def clear(self) -> None:
        """Forget every key (tests and admin use)."""
        ...
