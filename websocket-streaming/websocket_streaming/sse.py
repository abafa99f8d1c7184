"""Server-Sent Events: one `price` event per book update, in order, plus heartbeats.

Every event carries its update's id (`<epoch>-<seq>`, see book.py). A client reconnecting
with `Last-Event-ID` gets exactly the events after that id from the ring, then live ones;
when the id cannot be resumed exactly it gets one snapshot event per symbol instead.
Heartbeats carry the id of the stream's position too, so a filtered stream's id keeps up
with the ring instead of ageing out of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from shared import tracing

from .book import PriceBook, PriceRecord
from .encoding import sse_event
from .stats import IngestStats

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n"


class SubscriberSlots:
    """Caps concurrent streams so SSE can never take every worker thread from REST."""

    def __init__(self, limit: int, gauge: Any = None) -> None:
        self.limit = limit
        self.count = 0
        self._gauge = gauge  # sardag_sse_subscribers: the HPA's per-pod signal
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Take a slot; False when all are in use."""
        with self._lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            self._export()
            return True

    def release(self) -> None:
        """Give a slot back."""
        with self._lock:
            self.count -= 1
            self._export()

    def _export(self) -> None:
        if self._gauge is not None:
            self._gauge.set(self.count)


def price_events(
    book: PriceBook,
    last_event_id: str | None,
    symbols: frozenset[str] | None,
    stale_after: float,
    heartbeat: float,
    retry: float,
    stats: IngestStats,
) -> Iterator[bytes]:
    """Yield SSE chunks: what a client resuming after `last_event_id` missed, then live updates."""
    cursor, first = book.resume(last_event_id)
    if first:
        stats.sse_resyncs += 1
    yield f"retry: {round(retry * 1000)}\n".encode() + CONNECTED + _chunk(first, symbols, stale_after)
    beat_at = time.monotonic() + heartbeat
    while not book.closed:
        cursor, records, lost = book.wait_since(cursor, max(0.0, beat_at - time.monotonic()))
        if lost:  # this client fell a whole ring behind: resend current state instead
            stats.sse_resyncs += 1
            cursor, records = book.ordered_snapshot()
        chunk = _chunk(records, symbols, stale_after)
        if chunk:
            span = _write_span(records, symbols) if tracing.enabled() else tracing.NOOP_SPAN
            try:
                yield chunk  # returns once the server wrote it
            finally:
                span.end()
        if time.monotonic() >= beat_at:
            beat_at = time.monotonic() + heartbeat
            yield _heartbeat(book.id_at(cursor))


def _write_span(records: list[PriceRecord], symbols: frozenset[str] | None) -> tracing.Span:
    """A span for writing a chunk with sampled updates to this client, in the first one's trace."""
    traced = [r.trace for r in records if r.trace is not None and (symbols is None or r.symbol in symbols)]
    if not traced:
        return tracing.NOOP_SPAN
    return tracing.start_span(
        "sse write", parent=traced[0], kind="producer", attributes={"sse.events": len(records)}
    )


def _heartbeat(position: str | None) -> bytes:
    """A comment, plus `id:` when known: sets the client's last id without firing an event."""
    return HEARTBEAT + (b"\n" if position is None else f"id: {position}\n\n".encode())


def _chunk(records: list[PriceRecord], symbols: frozenset[str] | None, stale_after: float) -> bytes:
    return b"".join(sse_event(r, stale_after) for r in records if symbols is None or r.symbol in symbols)
