"""Server-Sent Events: one event per book update, in order, plus heartbeats.

Event types: `price` (a trade or 24 h ticker changed the record), `quote` (a bookTicker
changed best bid/ask) and `candle` (a candle changed: its /candles object, at most one per
candle per CANDLE_EVENT_SECONDS); a stream sends the types its `?events=` names (default
`price`). Every event carries its update's id (`<epoch>-<seq>`, candles `<epoch>c-<n>`, see
book.py). A client reconnecting with `Last-Event-ID` gets exactly the events after that id
from the ring, then live ones; when the id cannot be resumed exactly it gets a snapshot
instead: one event per symbol and type, and for `candle` the latest event of the two newest
candles per symbol and interval (older ones: /candles).
Heartbeats carry the id of the stream's position too, so a filtered stream's id keeps up
with the ring instead of ageing out of it.

Backpressure: a subscriber's queue is the stretch of the shared ring between its cursor and
the newest update, so it costs no memory of its own; it is bounded at `queue_limit` events.
A subscriber that falls further behind (its socket stopped taking data) is sent one
`event: overflow` (no `id:`, so the client's last id stays the last event it received) and
the stream is closed: an EventSource reconnects by itself with that `Last-Event-ID` and the
ring replays what was dropped, if it still holds it (else the snapshot). A stream the ring
lapped between two wake-ups (a burst of other types or symbols) is resent the snapshot. A write that stays
blocked for `write_timeout` seconds is cut by the server (the socket's send timeout).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shared import tracing

from .book import CANDLE, PRICE, QUOTE, PriceBook, PriceRecord
from .encoding import sse_event, sse_message
from .stats import IngestStats

CONNECTED = b": connected\n\n"
HEARTBEAT = b": heartbeat\n"
EVENT_TYPES = (PRICE, QUOTE, CANDLE)  # what `?events=` accepts
DEFAULT_EVENTS = frozenset({PRICE})
FULL, CLIENT_FULL = "full", "client"  # why SubscriberSlots.acquire refused
# A stream socket's send buffer (Linux doubles it): at 1000 events/s of ~400 bytes it covers
# a 250 ms round trip, and it is all the memory a stalled subscriber can hold.
SEND_BUFFER_BYTES = 128 * 1024


@dataclass(frozen=True)
class StreamSettings:
    """One stream's timings and bounds (SSE_* settings)."""

    stale_after: float
    heartbeat: float
    retry: float
    queue_limit: int = 8192
    write_timeout: float = 30.0


class SubscriberSlots:
    """Caps concurrent streams: per worker, so SSE never takes every thread from REST, and per
    client, so one client cannot take them all."""

    def __init__(self, limit: int, per_client: int | None = None, gauge: Any = None) -> None:
        self.limit = limit
        self.per_client = limit if per_client is None else per_client
        self.count = 0
        self._clients: Counter[str] = Counter()
        self._gauge = gauge  # sardag_sse_subscribers: what the HPA scales on
        self._lock = threading.Lock()

    def acquire(self, client: str = "") -> str | None:
        """Take a slot for `client`; None when taken, else why not (FULL or CLIENT_FULL)."""
        with self._lock:
            if self.count >= self.limit:
                return FULL
            if self._clients[client] >= self.per_client:
                return CLIENT_FULL
            self.count += 1
            self._clients[client] += 1
            self._export()
            return None

    def release(self, client: str = "") -> None:
        """Give `client`'s slot back."""
        with self._lock:
            self.count -= 1
            self._clients[client] -= 1
            if self._clients[client] <= 0:
                del self._clients[client]
            self._export()

    def _export(self) -> None:
        if self._gauge is not None:
            self._gauge.set(self.count)


def price_events(
    book: PriceBook,
    last_event_id: str | None,
    symbols: frozenset[str] | None,
    kinds: frozenset[str],
    settings: StreamSettings,
    stats: IngestStats,
    served: Callable[[list[PriceRecord]], object] | None = None,
) -> Iterator[bytes]:
    """Yield SSE chunks: what a client resuming after `last_event_id` missed, then live updates.

    `served` gets the records of each live chunk once it was written (for latency metrics).
    """
    cursor, first = book.resume(last_event_id)
    if first:
        stats.sse_resyncs += 1
    yield (
        f"retry: {round(settings.retry * 1000)}\n".encode()
        + CONNECTED
        + _snapshot(first, symbols, kinds, settings.stale_after)
    )
    last_sent = None if first else last_event_id
    replaying = last_sent is not None  # a resume's replay is asked for, not a backlog: not bounded
    beat_at = time.monotonic() + settings.heartbeat
    while not book.closed:
        cursor, records, lost = book.wait_since(cursor, max(0.0, beat_at - time.monotonic()), kinds)
        wanted = [r for r in records if r.kind in kinds and (symbols is None or r.symbol in symbols)]
        if len(wanted) > settings.queue_limit and not replaying:
            yield _overflow(len(wanted), last_sent, stats)
            return
        replaying = False
        if lost:  # the ring moved a whole ring past this stream between two wake-ups
            stats.sse_resyncs += 1
            cursor, records = book.ordered_snapshot()
            yield from _written(_snapshot(records, symbols, kinds, settings.stale_after), settings, stats)
            continue
        for start in range(0, len(wanted), settings.queue_limit):
            part = wanted[start : start + settings.queue_limit]
            span = _write_span(part, None) if tracing.enabled() else tracing.NOOP_SPAN
            try:  # returns once the server wrote it
                yield from _written(b"".join(sse_event(r, settings.stale_after) for r in part), settings, stats)
            finally:
                span.end()
            if served is not None:  # a snapshot's records are old by design: only live ones are timed
                served(part)
            last_sent = part[-1].event_id
        if time.monotonic() >= beat_at:
            beat_at = time.monotonic() + settings.heartbeat
            position = book.id_at(cursor)
            yield from _written(_heartbeat(position), settings, stats)
            last_sent = position or last_sent


def _written(chunk: bytes, settings: StreamSettings, stats: IngestStats) -> Iterator[bytes]:
    """Yield `chunk`; a close while it was being written for `write_timeout` is the server
    cutting a subscriber that stopped reading (the socket's send timeout), and is counted."""
    started = time.monotonic()
    try:
        yield chunk
    except GeneratorExit:
        if time.monotonic() - started >= settings.write_timeout * 0.9:
            stats.sse_write_timeouts += 1
        raise


def _overflow(dropped: int, last_sent: str | None, stats: IngestStats) -> bytes:
    """The last message to a subscriber that fell `queue_limit` events behind."""
    stats.sse_dropped += dropped
    stats.sse_overflows += 1
    data = json.dumps({"reason": "slow_consumer", "dropped": dropped, "last_id": last_sent})
    return f"event: overflow\ndata: {data}\n\n".encode()


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


def _snapshot(
    records: list[PriceRecord], symbols: frozenset[str] | None, kinds: frozenset[str], stale_after: float
) -> bytes:
    """Each symbol's current state as one event per wanted type it has, ages as of now."""
    out = []
    for record in records:
        if symbols is not None and record.symbol not in symbols:
            continue
        if PRICE in kinds and record.price is not None:
            out.append(sse_message(record, PRICE, stale_after))
        if QUOTE in kinds and record.bid is not None:
            out.append(sse_message(record, QUOTE, stale_after))
        if CANDLE in kinds and record.kind is CANDLE and record.encoded is not None:
            out.append(record.encoded)
    return b"".join(out)
