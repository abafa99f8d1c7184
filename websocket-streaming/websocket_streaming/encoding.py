"""The price answer as JSON text: decimals written verbatim as JSON numbers."""

from __future__ import annotations

import time
from decimal import Decimal

from .book import RECORD_FIELDS, PriceRecord


def _num(value: Decimal | int | None) -> str:
    return "null" if value is None else str(value)


def price_answer(record: PriceRecord, stale_after: float, now: float | None = None) -> str:
    """The docs/design.md "Price answer" object for `record`, as JSON text.

    Flask's JSON provider turns Decimal into a string; the design wants a JSON number with
    the exchange's exact digits, so the object is written by hand (every field is a known
    type: the symbol was validated as [A-Z0-9], decimals are finite).
    """
    head = record.answer_head
    if head is None:  # records are never changed once published: the head is written once
        head = record.answer_head = _answer_head(record)
    age = max(0.0, (time.time() if now is None else now) - record.received_at)
    stale = "true" if age > stale_after else "false"
    return f'{head},"age_seconds":{age:.3f},"stale":{stale},"source":"{record.source}"}}'


def _answer_head(record: PriceRecord) -> str:
    """The answer up to `age_seconds`: the part that depends on the record alone."""
    fields = ",".join(f'"{name}":{_num(getattr(record, name))}' for name in RECORD_FIELDS)
    return (
        f'{{"symbol":"{record.symbol}",{fields},"event_time":{_num(record.event_time)},'
        f'"received_at":{int(record.received_at * 1000)}'
    )


def sse_event(record: PriceRecord, stale_after: float, now: float | None = None) -> bytes:
    """One `event: price` SSE message with its `id:`, its age and staleness as of `now`."""
    data = price_answer(record, stale_after, now)
    return f"id: {record.event_id}\nevent: price\ndata: {data}\n\n".encode()


def live_sse_event(record: PriceRecord, stale_after: float) -> bytes:
    """`sse_event` for a live update, encoded once per record for all the streams it wakes.

    Every stream sends a live update within moments of its arrival, so its age then is the
    one the first stream computed. Snapshots and resyncs send records later: `sse_event`.
    """
    encoded = record.encoded
    if encoded is None:
        encoded = record.encoded = sse_event(record, stale_after)
    return encoded
