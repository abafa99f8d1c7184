"""Routes /signals/save, /signals/history and /signals/<id>."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from flask import Blueprint, Response, jsonify
from pydantic import Field, TypeAdapter

from database_service.cursor import after_cursor, encode_cursor
from database_service.domain import new_signal, now_us
from database_service.idempotency import conflict_check, signal_fields
from database_service.models import MAX_BIGINT, CoreSignalIn, HistoryQuery, SignalIn
from database_service.parsing import json_body, query, validate, validate_batch
from database_service.prefer import return_preference, saved
from database_service.state import service_state
from database_service.storage import SignalFilter, get_read_storage, get_storage
from database_service.storage.base import datetime_to_us
from shared.auth import require_api_key
from shared.errors import not_found, validation_error
from shared.rate_limiter import rate_limit

MAX_BATCH = 1000
bp = Blueprint("signals", __name__)
BATCH = TypeAdapter(Annotated[list[SignalIn], Field(min_length=1, max_length=MAX_BATCH)])
CORE_BATCH = TypeAdapter(Annotated[list[CoreSignalIn], Field(min_length=1, max_length=MAX_BATCH)])


def _stored(created: int) -> None:
    if created:
        service_state().stored(signals=created)


@bp.post("/signals/save")
@rate_limit(requests_per_minute=100, scope="signals_save")
@require_api_key
def save_signals() -> tuple[Response, int]:
    """Save one signal (object) or up to 1000 (array) in one transaction."""
    body = json_body()
    if isinstance(body, list):
        return _save_batch(body)
    if not isinstance(body, dict):
        raise validation_error([{"field": "body", "message": "must be a JSON object or an array of objects"}])
    signal = validate(SignalIn, body)
    new = new_signal(signal, now_us())
    check = conflict_check("signal", lambda _: signal_fields(signal, new))
    results = get_storage().save_signals([new], check)
    _stored(sum(1 for _, fresh in results if fresh))
    return saved(results, lambda: results[0][0], return_preference())


def _save_batch(body: list[Any]) -> tuple[Response, int]:
    signals = validate_batch(CORE_BATCH, BATCH, body)
    default = now_us()
    new = [new_signal(s, default) for s in signals]
    check = conflict_check("signal", lambda i: signal_fields(signals[i], new[i]), batch=True)
    preference = return_preference()
    results = get_storage().save_signals(new, check, full=preference != "minimal")
    created = sum(1 for _, fresh in results if fresh)
    _stored(created)
    return saved(
        results,
        lambda: {"count": len(results), "created": created, "signals": [s for s, _ in results]},
        preference,
    )


@bp.get("/signals/history")
@rate_limit(requests_per_minute=200, scope="signals_history")
def history() -> Response:
    """Newest first, filtered, keyset-paginated by an opaque cursor."""
    params = query(HistoryQuery)
    after = after_cursor(params.cursor)
    filters = SignalFilter(params.symbol, params.strategy, params.action, params.since, params.until)
    rows = get_read_storage().signal_history(filters, after, params.limit + 1)
    page, more = rows[: params.limit], len(rows) > params.limit
    next_cursor = _cursor_of(page[-1]) if more else None
    return jsonify({"signals": page, "count": len(page), "next_cursor": next_cursor})


def _cursor_of(signal: dict[str, Any]) -> str:
    ts = datetime.fromisoformat(signal["timestamp"])
    return encode_cursor(datetime_to_us(ts), signal["id"])


@bp.get("/signals/<int:signal_id>")
def get_signal(signal_id: int) -> Response:
    """One signal by id, or 404."""
    found = get_read_storage().get_signal(signal_id) if signal_id <= MAX_BIGINT else None
    if found is None:
        raise not_found(f"No signal with id {signal_id}.")
    return jsonify(found)
