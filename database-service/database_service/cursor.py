"""Opaque keyset cursors: urlsafe base64 of 'v1:<timestamp us>:<id>'."""

from __future__ import annotations

import base64
import binascii
import re

from database_service.models import MAX_BIGINT, MAX_TIME_US, MIN_TIME_US

_FORMAT = re.compile(r"^v1:(-?[0-9]{1,19}):([0-9]{1,19})$")


class BadCursor(ValueError):
    """The cursor was not produced by this service."""


def encode_cursor(ts_us: int, row_id: int) -> str:
    """Cursor pointing just after the row (ts_us, row_id) in newest-first order."""
    raw = f"v1:{ts_us}:{row_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """Return (ts_us, id) or raise BadCursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise BadCursor("is not a cursor returned by this service") from None
    match = _FORMAT.match(raw)
    if not match:
        raise BadCursor("is not a cursor returned by this service")
    ts_us, row_id = int(match[1]), int(match[2])
    if not (MIN_TIME_US <= ts_us < MAX_TIME_US and 0 < row_id <= MAX_BIGINT):
        raise BadCursor("is out of range")
    return ts_us, row_id
