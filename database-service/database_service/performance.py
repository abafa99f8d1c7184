"""Routes /performance/track and /performance/stats (cached, invalidated by new trades)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify

from database_service import stats
from database_service.cursor import after_cursor, encode_cursor
from database_service.domain import new_trade, now_us
from database_service.idempotency import conflict_check, trade_fields
from database_service.models import StatsQuery, TradeIn, TradesQuery
from database_service.parsing import json_body, query, validate
from database_service.prefer import return_preference, saved
from database_service.settings import DatabaseConfig
from database_service.state import service_state
from database_service.storage import Storage, TradeFilter, get_read_storage, get_storage
from database_service.storage.base import datetime_to_us
from shared import tracing
from shared.app import typed_config
from shared.auth import require_api_key
from shared.errors import validation_error
from shared.rate_limiter import rate_limit
from shared.redis_cache import get_cache

bp = Blueprint("performance", __name__)


@bp.post("/performance/track")
@rate_limit(requests_per_minute=100, scope="performance_track")
@require_api_key
def track() -> tuple[Response, int]:
    """Record one closed trade; its pnl, pnl_percent, outcome and duration are computed."""
    body = json_body()
    if not isinstance(body, dict):
        raise validation_error([{"field": "body", "message": "must be a JSON object"}])
    trade = validate(TradeIn, body)
    exit_us = trade.exit_time if trade.exit_time is not None else now_us()
    if trade.entry_time is not None and trade.entry_time > exit_us:
        raise validation_error([{"field": "entry_time", "message": "must not be after exit_time"}])
    new = new_trade(trade, exit_us)
    stored, created = get_storage().save_trade(new, conflict_check("trade", lambda _: trade_fields(trade, new)))
    if created:  # the save raised the statistics version: cached statistics are unreachable
        service_state().stored(trades=1)
    return saved([(stored, created)], lambda: stored, return_preference())


@bp.get("/performance/trades")
@rate_limit(requests_per_minute=200, scope="performance_trades")
def trades() -> Response:
    """Closed trades, latest exit first, filtered like the statistics, keyset-paginated."""
    params = query(TradesQuery)
    filters = TradeFilter(params.symbol, params.strategy, params.since, params.until)
    rows = get_read_storage().trade_history(filters, after_cursor(params.cursor), params.limit + 1)
    page, more = rows[: params.limit], len(rows) > params.limit
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = encode_cursor(datetime_to_us(datetime.fromisoformat(last["exit_time"])), last["id"])
    return jsonify({"trades": page, "count": len(page), "next_cursor": next_cursor})


@bp.get("/performance/stats")
def performance_stats() -> Response:
    """Statistics over closed trades, computed by the database, cached per statistics version.

    The version lives in the database and rises in every new trade's transaction, so no
    worker or instance can serve statistics older than the last trade it could read. Read
    from DATABASE_READ_URL's standby, an answer is cached under the version it was computed
    at (that standby's), never under a newer one read elsewhere.
    """
    params = query(StatsQuery)
    cache = get_cache()
    storage = get_read_storage()
    hit = cache.get(_key(storage.stats_version(), params))
    if hit is not None:
        return _answer(hit, "HIT")
    version, result = _compute(storage, params)
    if version is not None:  # None: a trade landed while computing; the next request caches
        cache.set(_key(version, params), result, typed_config(DatabaseConfig).stats_cache_ttl)
    return _answer(result, "MISS")


def _key(version: int, params: StatsQuery) -> str:
    return f"stats:v{version}:{_fingerprint(params)}"


def _answer(result: dict[str, Any], cache_status: str) -> Response:
    response = jsonify(result)
    response.headers["X-Cache"] = cache_status
    return response


def _fingerprint(params: StatsQuery) -> str:
    text = json.dumps(params.model_dump(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _compute(storage: Storage, params: StatsQuery) -> tuple[int | None, dict[str, Any]]:
    filters = TradeFilter(params.symbol, params.strategy, params.since, params.until)
    # Its own span: on SQLite no instrumentation sees the query, on PostgreSQL its SQL is a child.
    with tracing.span("statistics query", attributes={"stats.group_by": params.group_by or ""}):
        version, rows = storage.versioned_trade_stats(filters, params.group_by)
    if params.group_by is None:
        return version, stats.finalize(rows[0]) if rows else stats.empty()
    groups = [{"key": row.key, **stats.finalize(row)} for row in rows]
    return version, {"group_by": params.group_by, "groups": groups}
