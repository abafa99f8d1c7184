"""OpenAPI 3.1 document of websocket-streaming, served at /openapi.json.

Written by hand (the service has no request models): each route, its parameters, the price
answer, the SSE stream and the JSON error shape of docs/design.md. tests/reliability/
test_schemathesis.py runs schemathesis against it, so the document and the service agree.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flask import Flask, Response, jsonify

from shared import __version__
from shared.app import INDEX_SCHEMA
from shared.docs_page import docs_paths
from shared.health_check import probe_paths
from shared.openapi_examples import add_examples
from shared.symbols import SYMBOL_PATTERN

from .book import RECORD_FIELDS
from .candle_openapi import CANDLE_EXAMPLES, CANDLE_SCHEMA, EVENTS_PATTERN, candles_operation
from .examples import EXAMPLES

SYMBOL = SYMBOL_PATTERN.strip("^$")
SYMBOLS_PATTERN = f"^{SYMBOL}(,{SYMBOL})*$"
REF = "#/components/schemas/"
DECIMAL = {"type": ["number", "null"], "description": "written from the exchange's exact decimal string"}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code, e.g. validation_error"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}
PRICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["symbol", "price", "event_time", "received_at", "age_seconds", "stale", "source"],
    "properties": {
        "symbol": {"type": "string", "pattern": "^[A-Z0-9]{2,20}$"},
        "price": {"type": "number", "description": "written from the exchange's exact decimal string"},
        **{name: DECIMAL for name in RECORD_FIELDS if name != "price"},
        "event_time": {"type": ["integer", "null"], "description": "exchange event time, epoch ms"},
        "received_at": {"type": "integer", "description": "epoch ms"},
        "quote_id": {
            "type": ["integer", "null"],
            "description": "bookTicker update id `u` of the quote (null: bid/ask from the 24 h ticker)",
        },
        "quote_time": {"type": ["integer", "null"], "description": "when the quote was received, epoch ms"},
        "quote_age_seconds": {"type": ["number", "null"], "minimum": 0},
        "age_seconds": {"type": "number", "minimum": 0},
        "stale": {"type": "boolean", "description": "older than PRICE_STALE_SECONDS"},
        "source": {"type": "string", "enum": ["websocket", "rest"]},
    },
}
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "service", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
        "service": {"type": "string"},
        "uptime_seconds": {"type": "number"},
        "checks": {"type": "object"},
    },
}
STATS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["messages_total", "reconnects", "connected", "sse_subscribers"],
    "properties": {
        "role": {"type": "string"},
        "messages_total": {"type": "integer", "minimum": 0},
        "messages_by_type": {"type": "object", "additionalProperties": {"type": "integer"}},
        "reconnects": {"type": "integer", "minimum": 0},
        "connected": {"type": "boolean"},
        "last_message_age_seconds": {"type": ["number", "null"]},
        "sse_subscribers": {"type": "integer", "minimum": 0},
    },
}
DESCRIPTIONS = {
    "400": "validation_error: a malformed symbol, or a bad or repeated query parameter (named in details)",
    "404": "not_found: the symbol is not tracked (see /symbols)",
    "405": "method_not_allowed",
    "414": "the request line is longer than 4094 bytes (answered by gunicorn, as HTML)",
    "429": "rate_limited (Retry-After, X-RateLimit-* headers); on /stream also too_many_streams: "
    "this client holds SSE_MAX_STREAMS_PER_CLIENT streams on the worker already",
    "500": "internal_error",
    "503": "unavailable: no price received yet, or too many stream subscribers (Retry-After)",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _text(media_type: str) -> dict[str, Any]:
    return {media_type: {"schema": {"type": "string"}}}


def _operation(summary: str, ok: dict[str, Any], *errors: str, **extra: Any) -> dict[str, Any]:
    responses = {"200": ok}
    for status in (*errors, "405", "500"):
        responses[status] = {"description": DESCRIPTIONS[status], "content": _json({"$ref": f"{REF}Error"})}
    responses["414"] = {
        "description": DESCRIPTIONS["414"],
        "content": _text("text/html"),
    }
    return {"summary": summary, **extra, "responses": responses}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json(schema)}


def _health() -> dict[str, Any]:
    operation = _operation("Liveness, ingest and upstream status", _ok("healthy or degraded", HEALTH_SCHEMA))
    operation["responses"]["503"] = _ok("unhealthy: an ingest thread died", HEALTH_SCHEMA)
    return operation


def _price() -> dict[str, Any]:
    symbol = {
        "name": "symbol",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": SYMBOL_PATTERN},
    }
    return _operation(
        "Latest price of one symbol (case-insensitive)",
        _ok("the price", {"$ref": f"{REF}Price"}),
        "400",
        "404",
        "429",
        "503",
        parameters=[symbol],
    )


def _prices() -> dict[str, Any]:
    body = {
        "type": "object",
        "required": ["prices", "missing"],
        "properties": {
            "prices": {"type": "array", "items": {"$ref": f"{REF}Price"}},
            "missing": {"type": "array", "items": {"type": "string"}, "description": "no price yet"},
        },
    }
    return _operation("Every tracked symbol's latest price", _ok("the prices", body))


def _stream() -> dict[str, Any]:
    symbols = {
        "name": "symbols",
        "in": "query",
        "required": False,
        "description": "comma-separated tracked symbols (default: all), given at most once",
        "schema": {"type": "string", "pattern": SYMBOLS_PATTERN},
    }
    types = {
        "name": "events",
        "in": "query",
        "required": False,
        "description": "comma-separated event types, each once: price, quote, candle (default: price)",
        "schema": {"type": "string", "pattern": EVENTS_PATTERN},
    }
    last_id = {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "resume after this event (on any worker or instance sharing Redis): the missed "
        "events of every requested type, or, when the ring no longer holds it, a snapshot: one price "
        "and one quote event per symbol, and for candle the latest event of the two newest candles per "
        "symbol and interval (the open one and the last closed; older ones: GET /candles)",
        "schema": {"type": "string"},
    }

    def typed(name: str, data: dict[str, Any], description: str, with_id: bool = True) -> dict[str, Any]:
        body = {"type": "string", "contentMediaType": "application/json", "contentSchema": data}
        properties: dict[str, Any] = {"event": {"const": name}, "data": body}
        if with_id:
            properties["id"] = {"type": "string", "description": "`<epoch>-<seq>`: send as Last-Event-ID"}
        return {"title": name, "description": description, "type": "object", "properties": properties}

    overflow = {
        "type": "object",
        "required": ["reason", "dropped", "last_id"],
        "properties": {
            "reason": {"const": "slow_consumer"},
            "dropped": {"type": "integer", "minimum": 0},
            "last_id": {"type": ["string", "null"], "description": "the last event this stream sent"},
        },
    }
    event = {  # OpenAPI 3.1 has no itemSchema: a text/event-stream schema describes each event
        "oneOf": [
            typed("price", {"$ref": f"{REF}Price"}, "a trade or 24 h ticker changed the symbol's record"),
            typed("quote", {"$ref": f"{REF}Price"}, "a bookTicker changed best bid/ask (ordered by `u`)"),
            typed(
                "candle",
                {"$ref": f"{REF}Candle"},
                "a candle changed: traded, healed, or closed by the clock (at most one event per candle "
                "per CANDLE_EVENT_SECONDS); id `<epoch>c-<n>`, the same on every worker sharing Redis",
            ),
            typed(
                "overflow",
                overflow,
                "last message before the server closes a stream that fell SSE_QUEUE_EVENTS behind; "
                "reconnect with Last-Event-ID to get what was dropped",
                with_id=False,
            ),
        ]
    }
    events = {
        "description": "events of the requested types, in update order, each with its id; comment "
        "heartbeats (with `id:`) every SSE_HEARTBEAT_SECONDS",
        "content": {"text/event-stream": {"schema": event}},
    }
    return _operation(
        "Server-Sent Events: one event per update of the requested types",
        events,
        "400",
        "404",
        "429",
        "503",
        parameters=[symbols, types, last_id],
    )


@lru_cache(maxsize=1)
def build_openapi(version: str = __version__) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of websocket-streaming (shared: do not mutate it)."""
    symbols = {"type": "object", "required": ["symbols"], "properties": {"symbols": {"type": "array"}}}
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Sardag websocket-streaming", "version": version},
        "paths": {
            "/": {
                "get": _operation(
                    "Service name, version, links to /health, /openapi.json, /metrics and every route",
                    _ok("the index", INDEX_SCHEMA),
                )
            },
            "/health": {"get": _health()},
            **probe_paths("a price no older than PRICE_STALE_SECONDS in this process's book"),
            "/stats": {"get": _operation("Ingest counters", _ok("counters", STATS_SCHEMA))},
            "/metrics": {
                "get": _operation(
                    "Prometheus metrics",
                    {
                        "description": "text exposition",
                        "content": _text("text/plain"),
                    },
                )
            },
            "/openapi.json": {"get": _operation("This document", _ok("OpenAPI 3.1", {"type": "object"}))},
            **docs_paths(),
            "/symbols": {"get": _operation("Tracked symbols", _ok("upper-case symbols", symbols))},
            "/price/{symbol}": {"get": _price()},
            "/prices": {"get": _prices()},
            "/stream": {"get": _stream()},
            "/candles/{symbol}": {"get": candles_operation(_operation, _ok)},
        },
        "components": {"schemas": {"Error": ERROR_SCHEMA, "Price": PRICE_SCHEMA, "Candle": CANDLE_SCHEMA}},
    }
    return add_examples(document, {**EXAMPLES, **CANDLE_EXAMPLES})


def openapi_view() -> Response:
    """GET /openapi.json."""
    return jsonify(build_openapi())


def init_app(app: Flask) -> None:
    """Serve the document at /openapi.json."""
    app.add_url_rule("/openapi.json", "openapi", openapi_view, methods=["GET"])
