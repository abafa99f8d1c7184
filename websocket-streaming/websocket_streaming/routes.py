"""HTTP routes: /symbols, /price/<symbol>, /prices, /stream, /stats."""

from __future__ import annotations

import socket
import time
from functools import partial

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from shared.errors import APIError, not_found, refuse_unknown_parameters, unavailable, validation_error
from shared.rate_limiter import client_ip, rate_limit
from shared.symbols import SYMBOL_RE, SYMBOL_RULE

from .encoding import price_answer
from .latency import SSE
from .service import StreamingService
from .sse import (
    CLIENT_FULL,
    DEFAULT_EVENTS,
    EVENT_TYPES,
    SEND_BUFFER_BYTES,
    StreamSettings,
    SubscriberSlots,
    price_events,
)

EXTENSION = "websocket_streaming"
SLOTS_EXTENSION = f"{EXTENSION}.sse"
JSON = "application/json"

bp = Blueprint("streaming", __name__)


def get_service(app: Flask | None = None) -> StreamingService:
    """The ingest service of `app` (default: the current app)."""
    service: StreamingService = (app or current_app).extensions[EXTENSION]
    return service


def find_service(app: Flask) -> StreamingService | None:
    """The ingest service of `app`, None for an app that is not websocket-streaming."""
    service: StreamingService | None = app.extensions.get(EXTENSION)
    return service


def subscriber_slots(app: Flask | None = None) -> SubscriberSlots:
    """The `/stream` subscriber slots of `app` (default: the current app)."""
    slots: SubscriberSlots = (app or current_app).extensions[SLOTS_EXTENSION]
    return slots


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
    """Server-Sent Events: `?events=price,quote` (default `price`), `?symbols=` filters.

    `Last-Event-ID` (sent by a reconnecting EventSource) resumes after that event.
    """
    refuse_unknown_parameters(("symbols", "events"))
    service = get_service()
    given = _once("symbols")
    wanted = frozenset(_tracked(service, s, "symbols") for s in given.split(",")) if given is not None else None
    kinds = _event_types(_once("events"))
    slots = subscriber_slots()
    client = client_ip()
    refused = slots.acquire(client)
    if refused == CLIENT_FULL:
        raise APIError(
            "too_many_streams",
            f"this client already holds {slots.per_client} streams on this worker",
            429,
            headers={"Retry-After": "5"},
        )
    if refused is not None:
        raise unavailable("too many stream subscribers; retry later", retry_after=5)
    config = service.settings
    settings = StreamSettings(
        stale_after=service.stale_after,
        heartbeat=config.sse_heartbeat_seconds,
        retry=config.sse_retry_seconds,
        queue_limit=config.sse_queue_events,
        write_timeout=config.sse_write_timeout_seconds,
    )
    _set_write_timeout(settings.write_timeout)
    events = price_events(
        service.book,
        request.headers.get("Last-Event-ID") or None,
        wanted,
        kinds,
        settings,
        service.stats,
        partial(service.latency.served, SSE),
    )
    response = Response(
        events, mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    response.call_on_close(lambda: slots.release(client))
    return response


def _once(field: str) -> str | None:
    """A query parameter given at most once (keeping only the first would answer a question
    the client did not ask); None when absent."""
    given = request.args.getlist(field)
    if len(given) > 1:
        raise validation_error([{"field": field, "message": "must be given at most once"}])
    return given[0] if given else None


def _event_types(raw: str | None) -> frozenset[str]:
    """`?events=price,quote`: each a known type, no repeats; default `price`."""
    if raw is None:
        return DEFAULT_EVENTS
    names = raw.split(",")
    bad = [n for n in names if n not in EVENT_TYPES]
    if bad or len(set(names)) != len(names):
        message = f"comma-separated, each once, of: {', '.join(EVENT_TYPES)}"
        raise validation_error([{"field": "events", "message": message}])
    return frozenset(names)


def _set_write_timeout(seconds: float) -> None:
    """Bound how long one write to this client may block (gunicorn's or werkzeug's socket):
    a subscriber that stops reading is cut then, and its thread and slot come back. Its
    send buffer is bounded too, so a stalled subscriber holds at most that much memory."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        sock.settimeout(seconds)


@bp.get("/stats")
def stats() -> Response:
    """Message counts by type, rate, parse errors, reconnects, uptime, stream slots."""
    refuse_unknown_parameters()
    slots = subscriber_slots()
    return jsonify(
        {
            **get_service().summary(),
            "sse_subscribers": slots.count,
            "sse_max_subscribers": slots.limit,
            "sse_max_streams_per_client": slots.per_client,
        }
    )
