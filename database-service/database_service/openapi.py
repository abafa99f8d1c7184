"""OpenAPI 3.1 document generated from the pydantic models that validate requests.

Deliberate deviations from what the document can state (see docs/api-conformance.md):
`metadata` is bounded to 16 KiB of compact JSON and 32 levels of nesting, and a request line
longer than gunicorn's limit (4094 bytes) is answered 414 by gunicorn itself, as HTML.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from database_service.examples import EXAMPLES
from database_service.idempotency import IDENTICAL
from database_service.models import (
    MAX_BIGINT,
    METADATA_VALUE_SCHEMA,
    Error,
    GroupedStats,
    HistoryQuery,
    SaveSummary,
    ServiceStats,
    SignalBatchOut,
    SignalIn,
    SignalOut,
    SignalPage,
    Stats,
    StatsQuery,
    TradeIn,
    TradeOut,
    TradePage,
    TradesQuery,
)
from database_service.prefer import MINIMAL_NOTE
from shared import __version__
from shared.app import INDEX_SCHEMA
from shared.docs_page import docs_paths
from shared.health_check import probe_paths
from shared.openapi_examples import add_examples

REF = "#/components/schemas/{model}"
INPUT_MODELS: tuple[type[BaseModel], ...] = (SignalIn, TradeIn)
OUTPUT_MODELS: tuple[type[BaseModel], ...] = (
    SignalOut,
    SignalBatchOut,
    SaveSummary,
    SignalPage,
    TradeOut,
    TradePage,
    Stats,
    GroupedStats,
    ServiceStats,
    Error,
)
ERRORS = {
    "400": "validation_error or invalid_json",
    "401": "unauthorized: API_KEY is set and the key is missing or wrong",
    "404": "not_found",
    "405": "method_not_allowed",
    "413": "payload_too_large: body over 1 MiB",
    "414": "the request line is longer than 4094 bytes (answered by gunicorn, as HTML)",
    "415": "unsupported_media_type: Content-Type is not application/json",
    "422": "idempotency_conflict: a client_id already stored with a different body (see the description)",
    "429": "rate_limited (Retry-After, X-RateLimit-* headers)",
    "500": "internal_error",
    "503": "unavailable: the database cannot be reached (Retry-After)",
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


GUNICORN_414 = {"text/html": {"schema": {"type": "string"}}}


def _responses(ok: dict[str, Any], errors: tuple[str, ...]) -> dict[str, Any]:
    responses = dict(ok)
    for status in (*errors, "405", "500"):
        responses[status] = {"description": ERRORS[status], "content": _json(_ref(Error))}
    responses["414"] = {"description": ERRORS["414"], "content": GUNICORN_414}
    return responses


def _ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": _json(schema)}}


def _parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    return [
        {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            "schema": _not_null(prop),
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema["properties"].items()
    ]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query value is never JSON null: an optional parameter is simply left out."""
    branches = [b for b in prop.get("anyOf", ()) if b != {"type": "null"}]
    if len(branches) != 1:
        return prop
    rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    return {**branches[0], **rest}


def _components() -> dict[str, Any]:
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in INPUT_MODELS]
    pairs += [(m, "serialization") for m in OUTPUT_MODELS]
    _, top = models_json_schema(pairs, ref_template=REF)
    schemas: dict[str, Any] = {**top["$defs"], "MetadataValue": METADATA_VALUE_SCHEMA}
    return schemas


def _secured(operation: dict[str, Any], secured: bool) -> dict[str, Any]:
    """Declare the API-key schemes (and 401) only where the service has keys configured."""
    if not secured:
        return operation
    responses = {**operation["responses"], "401": {"description": ERRORS["401"], "content": _json(_ref(Error))}}
    return {**operation, "security": [{"apiKey": []}, {"bearer": []}], "responses": responses}


PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "RFC 7240 preferences; `return=minimal` answers a SaveSummary (ids only) instead of "
    "the stored rows. Unknown, malformed or repeated preferences are ignored (the first `return` counts).",
    "example": "return=minimal",
}
PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "`return=minimal` or `return=representation` when the request asked for it",
        "schema": {"type": "string", "enum": ["return=minimal", "return=representation"]},
    }
}


def _saved(description: str, rows: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """A save's answer: the stored rows, or with `Prefer: return=minimal` their ids."""
    schema = {"oneOf": [*rows, _ref(SaveSummary)]}
    return {status: {"description": description, "headers": PREFERENCE_APPLIED, "content": _json(schema)}}


def _save_signals() -> dict[str, Any]:
    batch = {"type": "array", "items": _ref(SignalIn), "minItems": 1, "maxItems": 1000}
    either = [_ref(SignalOut), _ref(SignalBatchOut)]
    return {
        "summary": "Save one signal, or an array of up to 1000 in one transaction",
        "description": f"{IDENTICAL} In a batch every item is checked; one conflict stores none of them. "
        + MINIMAL_NOTE,
        "parameters": [PREFER],
        "requestBody": {"required": True, "content": _json({"oneOf": [_ref(SignalIn), batch]})},
        "responses": _responses(
            {
                **_saved("stored (at least one new signal)", either, "201"),
                **_saved(
                    "every client_id was already stored with an identical body: the stored signals",
                    either,
                    "200",
                ),
            },
            ("400", "413", "415", "422", "429", "503"),
        ),
    }


def _history() -> dict[str, Any]:
    return {
        "summary": "Signal history, newest first, keyset-paginated",
        "parameters": _parameters(HistoryQuery),
        "responses": _responses(_ok("one page", _ref(SignalPage)), ("400", "429", "503")),
    }


def _get_signal() -> dict[str, Any]:
    return {
        "summary": "One signal",
        "parameters": [
            {
                "name": "signal_id",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT},
            }
        ],
        "responses": _responses(_ok("the signal", _ref(SignalOut)), ("404", "429", "503")),
    }


def _track() -> dict[str, Any]:
    return {
        "summary": "Record one closed trade",
        "description": f"{IDENTICAL} {MINIMAL_NOTE}",
        "parameters": [PREFER],
        "requestBody": {"required": True, "content": _json(_ref(TradeIn))},
        "responses": _responses(
            {
                **_saved("stored", [_ref(TradeOut)], "201"),
                **_saved(
                    "client_id already stored with an identical body: the stored trade", [_ref(TradeOut)], "200"
                ),
            },
            ("400", "413", "415", "422", "429", "503"),
        ),
    }


def _trades() -> dict[str, Any]:
    return {
        "summary": "Closed trades, latest exit first, keyset-paginated (time filters on exit_time)",
        "parameters": _parameters(TradesQuery),
        "responses": _responses(_ok("one page", _ref(TradePage)), ("400", "429", "503")),
    }


def _stats() -> dict[str, Any]:
    schema = {"oneOf": [_ref(Stats), _ref(GroupedStats)]}
    return {
        "summary": "Statistics over closed trades (X-Cache: HIT or MISS)",
        "parameters": _parameters(StatsQuery),
        "responses": _responses(_ok("statistics", schema), ("400", "429", "503")),
    }


def _simple(summary: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": _responses({"200": {"description": summary, "content": content}}, ()),
    }


def _health() -> dict[str, Any]:
    body = _json({"type": "object", "required": ["status", "checks"]})
    return {
        "summary": "Liveness and dependency status",
        "responses": {
            "200": {"description": "healthy or degraded", "content": body},
            "503": {"description": "unhealthy: a critical dependency is down", "content": body},
        },
    }


@lru_cache(maxsize=4)
def build_openapi(version: str = __version__, secured: bool = False) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document of database-service (shared: do not mutate it).

    `secured`: the service has API keys, so the write operations declare the key schemes.
    """
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Sardag database-service", "version": version},
        "paths": {
            "/": {
                "get": _simple(
                    "Service name, version, links to /health, /openapi.json, /metrics and every route",
                    _json(INDEX_SCHEMA),
                )
            },
            "/health": {"get": _health()},
            **probe_paths("the primary answers, or the standbys of DATABASE_READ_URL do"),
            "/stats": {"get": _simple("Counts, backend and uptime", _json(_ref(ServiceStats)))},
            "/metrics": {"get": _simple("Prometheus metrics", {"text/plain": {"schema": {"type": "string"}}})},
            "/openapi.json": {"get": _simple("This document", _json({"type": "object"}))},
            **docs_paths(),
            "/signals/save": {"post": _secured(_save_signals(), secured)},
            "/signals/history": {"get": _history()},
            "/signals/{signal_id}": {"get": _get_signal()},
            "/performance/track": {"post": _secured(_track(), secured)},
            "/performance/trades": {"get": _trades()},
            "/performance/stats": {"get": _stats()},
        },
        "components": {"schemas": _components()},
    }
    if secured:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
    return add_examples(document, EXAMPLES)
