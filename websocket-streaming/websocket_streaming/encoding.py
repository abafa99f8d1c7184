"""The price answer as JSON text: decimals written verbatim as JSON numbers."""

from __future__ import annotations

import time
from decimal import Decimal

from .book import RECORD_FIELDS, PriceRecord


def _num(value: Decimal | str | int | None) -> str:
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
    now = time.time() if now is None else now
    age = max(0.0, now - record.received_at)
    stale = "true" if age > stale_after else "false"
    quote_age = "null" if record.quote_at is None else f"{max(0.0, now - record.quote_at):.3f}"
    return (
        f'{head},"age_seconds":{age:.3f},"stale":{stale},"quote_age_seconds":{quote_age},'
        f'"source":"{record.source}"}}'
    )


def _answer_head(record: PriceRecord) -> str:
    """The answer up to `age_seconds`: the part that depends on the record alone (the ages,
    computed when sent, come after it)."""
    fields = ",".join(f'"{name}":{_num(record.stored(name))}' for name in RECORD_FIELDS)
    return (
        f'{{"symbol":"{record.symbol}",{fields},"event_time":{_num(record.event_time)},'
        f'"received_at":{int(record.received_at * 1000)},"quote_id":{_num(record.quote_id)},'
        f'"quote_time":{"null" if record.quote_at is None else int(record.quote_at * 1000)}'
    )


def sse_event(record: PriceRecord, stale_after: float) -> bytes:
    """One SSE message (`event: price` or `quote`, what the update changed) with its `id:`,
    encoded once per record for all streams."""
    encoded = record.encoded
    if encoded is None:
        encoded = record.encoded = sse_message(record, record.kind, stale_after)
    return encoded


def sse_message(record: PriceRecord, kind: str, stale_after: float) -> bytes:
    """`record` as one SSE message of type `kind`, encoded now (snapshots: ages as of now)."""
    data = price_answer(record, stale_after)
    return f"id: {record.event_id}\nevent: {kind}\ndata: {data}\n\n".encode()
