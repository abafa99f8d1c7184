"""HTTP routes: /symbols, /price/<symbol>, /prices, /stream, /stats."""

from __future__ import annotations

import time
from functools import partial

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from shared.errors import not_found, refuse_unknown_parameters, unavailable, validation_error
from shared.rate_limiter import rate_limit
from shared.symbols import SYMBOL_RE, SYMBOL_RULE

from .encoding import price_answer
from .latency import SSE
from .service import StreamingService
from .sse import SubscriberSlots, price_events

EXTENSION = "websocket_streaming"
JSON = "application/json"

bp = Blueprint("streaming", __name__)


def get_service(app: Flask | None = None) -> StreamingService:
    """The ingest service of `app` (default: the current app)."""
    service: StreamingService = (app or current_app).extensions[EXTENSION]
    return service


def _tracked(service: StreamingService, raw: str, field: str = "symbol") -> str:
    """Validate and upper-case a symbol: 400 if malformed, 404 if not tracked."""
    if not SYMBOL_RE.match(raw):
        raise validation_error([{"field": field, "message": f"must be {SYMBOL_RULE}"}])
    symbol = raw.upper()
    if symbol not in service.book.symbols:
        raise not_found(f"{symbol} is not a tracked symbol; see /symbols")
    return symbol


@bp.get("/symbols")
def symbols() -> Response:
    """The tracked symbols."""
    refuse_unknown_parameters()
    return jsonify({"symbols": list(get_service().symbols)})


@bp.get("/price/<symbol>")
@rate_limit(requests_per_minute=300, scope="price")
def price(symbol: str) -> Response:
    """The latest price of one symbol; 503 only while no price was ever received."""
    refuse_unknown_parameters()
    service = get_service()
    record = service.book.get(_tracked(service, symbol))
    if record is None or record.price is None:
        raise unavailable(f"no price received yet for {symbol.upper()}", retry_after=1)
    now = time.time()
    body = price_answer(record, service.stale_after, now)
    service.latency.answered(record, body, now)
    return Response(body + "\n", mimetype=JSON)


@bp.get("/prices")
def prices() -> Response:
    """Every tracked symbol's latest price; symbols with none yet are listed as missing."""
    refuse_unknown_parameters()
    service = get_service()
    now = time.time()
    records = service.book.snapshot()
    have = [s for s in service.symbols if s in records and records[s].price is not None]
    body = ",".join(price_answer(records[s], service.stale_after, now) for s in have)
    missing = [s for s in service.symbols if s not in have]
    return Response(f'{{"prices":[{body}],"missing":{_json_list(missing)}}}\n', mimetype=JSON)


def _json_list(symbols: list[str]) -> str:
    return "[" + ",".join(f'"{s}"' for s in symbols) + "]"


@bp.get("/stream")
@rate_limit(requests_per_minute=60, scope="stream")  # opening streams; RATE_LIMIT_STREAM
def stream() -> Response:
    """Server-Sent Events: `event: price` per update; `?symbols=BTCUSDT,ETHUSDT` filters.

    `Last-Event-ID` (sent by a reconnecting EventSource) resumes after that event.
    """
    refuse_unknown_parameters(("symbols",))
    service = get_service()
    given = request.args.getlist("symbols")
    if len(given) > 1:  # keeping only the first would answer a question the client did not ask
        raise validation_error([{"field": "symbols", "message": "must be given at most once"}])
    wanted = frozenset(_tracked(service, s, "symbols") for s in given[0].split(",")) if given else None
    slots: SubscriberSlots = current_app.extensions[f"{EXTENSION}.sse"]
    if not slots.acquire():
        raise unavailable("too many stream subscribers; retry later", retry_after=5)
    events = price_events(
        service.book,
        request.headers.get("Last-Event-ID") or None,
        wanted or None,
        service.stale_after,
        float(current_app.config["SSE_HEARTBEAT_SECONDS"]),
        float(current_app.config["SSE_RETRY_SECONDS"]),
        service.stats,
        partial(service.latency.served, SSE),
    )
    response = Response(
        events, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    response.call_on_close(slots.release)
    return response


@bp.get("/stats")
def stats() -> Response:
    """Message counts by type, rate, parse errors, reconnects, uptime."""
    refuse_unknown_parameters()
    slots: SubscriberSlots = current_app.extensions[f"{EXTENSION}.sse"]
    return jsonify({**get_service().summary(), "sse_subscribers": slots.count})
