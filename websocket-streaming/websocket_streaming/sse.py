"""Server-Sent Events: one `price` event per book update, in order, plus heartbeats."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from .book import PriceBook, PriceRecord
from .encoding import sse_event
from .stats import IngestStats

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n\n"


class SubscriberSlots:
    """Caps concurrent streams so SSE can never take every worker thread from REST."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Take a slot; False when all are in use."""
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self.count -= 1


def price_events(
    book: PriceBook,
    cursor: int,
    symbols: frozenset[str] | None,
    stale_after: float,
    heartbeat: float,
    stats: IngestStats,
) -> Iterator[bytes]:
    """Yield SSE chunks for every update after `cursor` until the book closes."""
    yield CONNECTED
    beat_at = time.monotonic() + heartbeat
    while not book.closed:
        cursor, records, lost = book.wait_since(cursor, max(0.0, beat_at - time.monotonic()))
        if lost:  # this client fell a whole ring behind: resend current state instead
            stats.sse_resyncs += 1
            records = list(book.snapshot().values())
        chunk = _chunk(records, symbols, stale_after)
        if chunk:
            yield chunk
        if time.monotonic() >= beat_at:
            beat_at = time.monotonic() + heartbeat
            yield HEARTBEAT


def _chunk(records: list[PriceRecord], symbols: frozenset[str] | None, stale_after: float) -> bytes:
    return b"".join(sse_event(r, stale_after) for r in records if symbols is None or r.symbol in symbols)
