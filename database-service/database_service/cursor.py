"""Keyset cursors: a position (timestamp us, id) as 22 characters of urlsafe base64.

Every string of the documented shape is a valid position: rows strictly before it in
newest-first order. So a cursor needs no server-side state or signature, and no
well-formed cursor is refused; one that names an instant outside the stored range
simply means "before everything" or "after everything".
"""

from __future__ import annotations

import base64
import re
import struct

from database_service.models import MAX_TIME_US, MIN_TIME_US
from shared.errors import validation_error

CURSOR_PATTERN = "^[A-Za-z0-9_-]{22}$"
_SHAPE = re.compile(CURSOR_PATTERN)
_POSITION = struct.Struct(">qq")  # signed 64-bit timestamp (us) and id, big-endian


class BadCursor(ValueError):
    """The cursor does not have the documented shape."""


def encode_cursor(ts_us: int, row_id: int) -> str:
    """Cursor pointing just after the row (ts_us, row_id) in newest-first order."""
    return base64.urlsafe_b64encode(_POSITION.pack(ts_us, row_id)).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """Return the position (ts_us, id), the timestamp clamped to the storable range."""
    if not _SHAPE.fullmatch(cursor):
        raise BadCursor("must be 22 characters A-Z a-z 0-9 _ - (a next_cursor value)")
    ts_us, row_id = _POSITION.unpack(base64.urlsafe_b64decode(cursor + "=="))
    # Stored times lie in [MIN_TIME_US, MAX_TIME_US): clamping keeps the same rows before
    # the position and gives both databases a time they can represent.
    return min(max(ts_us, MIN_TIME_US - 1), MAX_TIME_US), row_id


def after_cursor(cursor: str | None) -> tuple[int, int] | None:
    """The keyset position of a `cursor` query parameter (None: the first page), or the 400."""
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except BadCursor as exc:
        raise validation_error([{"field": "cursor", "message": str(exc)}]) from None
