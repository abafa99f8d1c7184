"""GET /candles/<symbol>: candles built from trades, newest last, the open one included."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, Response, request

from shared.errors import not_found, refuse_unknown_parameters, validation_error
from shared.rate_limiter import rate_limit
from shared.symbols import SYMBOL_RE, SYMBOL_RULE

from .candle_feed import CandleFeed
from .candles import candle_json
from .routes import get_service

DEFAULT_LIMIT = 500
MAX_EPOCH_MS = 7_258_118_400_000  # 2200-01-01, as database-service's timestamps
_DIGITS = re.compile(r"^[0-9]{1,16}$")

bp = Blueprint("candles", __name__)


def _feed() -> CandleFeed:
    return get_service().candles


def _once(field: str) -> str | None:
    """A query parameter given at most once; None when absent."""
    given = request.args.getlist(field)
    if len(given) > 1:
        raise validation_error([{"field": field, "message": "must be given at most once"}])
    return given[0] if given else None


def _symbol(feed: CandleFeed, raw: str) -> str:
    if not SYMBOL_RE.match(raw):
        raise validation_error([{"field": "symbol", "message": f"must be {SYMBOL_RULE}"}])
    symbol = raw.upper()
    if symbol not in feed.builder.symbols:
        raise not_found(f"{symbol} is not a tracked symbol; see /symbols")
    return symbol


def _interval(feed: CandleFeed, raw: str | None) -> str:
    intervals = feed.builder.intervals
    if raw is None:
        return intervals[0]
    if raw not in intervals:
        raise validation_error([{"field": "interval", "message": f"must be one of {', '.join(intervals)}"}])
    return raw


def _limit(raw: str | None, maximum: int) -> int:
    if raw is None:
        return min(DEFAULT_LIMIT, maximum)
    if not _DIGITS.match(raw) or not 1 <= int(raw) <= maximum:
        raise validation_error([{"field": "limit", "message": f"must be an integer from 1 to {maximum}"}])
    return int(raw)


def parse_until(raw: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 date-time with a zone; ValueError when neither."""
    if raw is None:
        return None
    if _DIGITS.match(raw):
        return int(raw)  # any count of milliseconds is a moment; past every candle it takes them all
    if not raw.isascii() or len(raw) > 40:
        raise ValueError(raw)
    parsed = datetime.fromisoformat(raw[:10] + raw[10:].upper())
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(raw)
    millis = (parsed - EPOCH) // _MILLISECOND
    if not 0 <= millis < MAX_EPOCH_MS:
        raise ValueError(raw)
    return millis


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - EPOCH


def _until(raw: str | None) -> int | None:
    try:
        return parse_until(raw)
    except ValueError:
        message = "must be epoch milliseconds or an ISO 8601 date-time with a zone, e.g. 2026-11-24T10:00:00Z"
        raise validation_error([{"field": "until", "message": message}]) from None


@bp.get("/candles/<symbol>")
@rate_limit(requests_per_minute=300, scope="candles")  # RATE_LIMIT_CANDLES
def candles(symbol: str) -> Response:
    """Candles of one symbol at one interval, newest last; the open candle is `closed: false`."""
    refuse_unknown_parameters(("interval", "limit", "until"))
    feed = _feed()
    name = _symbol(feed, symbol)
    interval = _interval(feed, _once("interval"))
    limit = _limit(_once("limit"), feed.builder.keep)
    until = _until(_once("until"))
    rows = feed.builder.query(name, interval, limit, until)
    body = ",".join(candle_json(row) for row in rows)
    return Response(
        f'{{"symbol":"{name}","interval":"{interval}","candles":[{body}]}}\n', mimetype="application/json"
    )
