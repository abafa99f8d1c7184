"""The per-line state of the upstream: one feed's live, replacing and draining connections."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from ..backoff import Backoff
from .connection import Connection
from .errors import Ended

if TYPE_CHECKING:
    from ..upstream import UpstreamSettings

ROTATION_SPREAD = 0.125  # line B rotates at 7/8 of the maximum age, apart from line A
LINE_NAMES = "AB"


class Line:
    """One feed: its live connection, the one replacing it, the ones draining, its backoff."""

    def __init__(self, index: int, settings: UpstreamSettings) -> None:
        self.index = index
        self.name = LINE_NAMES[index] if index < len(LINE_NAMES) else str(index)
        self.max_age = settings.max_age * (1 - ROTATION_SPREAD * index)
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self.active: Connection | None = None
        self.candidate: Connection | None = None
        self.draining: dict[Connection, float] = {}
        self.next_attempt = 0.0 if index == 0 else math.inf  # B waits until A delivered
        self.rotate_soon = False
        self.attempted = False
        self.delivered_once = False
        self.last_error: Ended | None = None
        self.last_error_at: float | None = None

    def connections(self) -> list[Connection]:
        """Every connection of this line that may still be open."""
        conns = [self.active, self.candidate, *self.draining]
        return [c for c in conns if c is not None]

    def failed(self, ended: Ended) -> None:
        """Remember why the line lost its connection or an attempt (for /health)."""
        self.last_error, self.last_error_at = ended, time.time()

    def status(self, now: float) -> dict[str, Any]:
        """This line's state for /health."""
        active = self.active
        return {
            "line": self.name,
            "connected": active is not None,
            "delivering": active is not None and active.messages > 0,
            "connection_age_seconds": None if active is None else round(active.age(now), 3),
            "consecutive_failures": self.backoff.failures,
            "next_attempt_in_seconds": None
            if active is not None or math.isinf(self.next_attempt)
            else round(max(0.0, self.next_attempt - now), 3),
        }
