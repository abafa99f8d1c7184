"""An example request and answer for every operation of websocket-streaming's /openapi.json."""

from __future__ import annotations

from typing import Any

from shared.openapi_examples import Example

PRICE: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "price": 43250.5,
    "bid": 43250.4,
    "ask": 43250.6,
    "open_24h": 42900.0,
    "high_24h": 43400.0,
    "low_24h": 42800.0,
    "volume_24h": 10234.5,
    "change_24h_percent": 0.817,
    "event_time": 1795514400000,
    "received_at": 1795514400003,
    "age_seconds": 0.4,
    "stale": False,
    "source": "websocket",
}
EXAMPLES: dict[tuple[str, str], Example] = {
    ("/", "get"): {
        "responses": {
            "200": {
                "service": "websocket-streaming",
                "version": "0.1.0",
                "links": {"docs": "/docs", "health": "/health", "openapi": "/openapi.json"},
                "routes": ["GET /", "GET /price/{symbol}", "GET /prices", "GET /stream"],
            }
        }
    },
    ("/livez", "get"): {"responses": {"200": {"status": "alive", "service": "websocket-streaming"}}},
    ("/readyz", "get"): {
        "responses": {
            "200": {
                "status": "ready",
                "service": "websocket-streaming",
                "checks": {"price": {"status": "ok", "detail": {"newest_price_age_seconds": 0.4}}},
            },
            "503": {
                "status": "not ready",
                "service": "websocket-streaming",
                "checks": {"price": {"status": "down", "detail": {"newest_price_age_seconds": None}}},
            },
        }
    },
    ("/health", "get"): {
        "responses": {
            "200": {
                "status": "healthy",
                "service": "websocket-streaming",
                "uptime_seconds": 60.2,
                "checks": {"ingest": {"status": "ok", "detail": "standalone"}},
            }
        }
    },
    ("/stats", "get"): {
        "responses": {
            "200": {
                "role": "standalone",
                "uptime_seconds": 60.2,
                "messages_total": 1200,
                "messages_per_second": 20.0,
                "reconnects": 0,
                "connected": True,
                "sse_subscribers": 1,
            }
        }
    },
    ("/metrics", "get"): {"responses": {"200": "sardag_stream_messages_total 1200.0\n"}},
    ("/openapi.json", "get"): {
        "responses": {"200": {"openapi": "3.1.0", "info": {"title": "websocket-streaming"}}}
    },
    ("/docs", "get"): {"responses": {"200": "<!doctype html>..."}},
    ("/docs/init.js", "get"): {"responses": {"200": 'window.ui = SwaggerUIBundle({url: "openapi.json"});'}},
    ("/docs/assets/{name}", "get"): {"parameters": {"name": "swagger-ui.css"}, "responses": {"200": "..."}},
    ("/symbols", "get"): {"responses": {"200": {"symbols": ["BTCUSDT", "ETHUSDT"]}}},
    ("/price/{symbol}", "get"): {"parameters": {"symbol": "BTCUSDT"}, "responses": {"200": PRICE}},
    ("/prices", "get"): {"responses": {"200": {"prices": [PRICE], "missing": ["ETHUSDT"]}}},
    ("/stream", "get"): {
        "parameters": {"symbols": "BTCUSDT,ETHUSDT"},
        "responses": {"200": 'retry: 1000\n\nid: 647f9a556d-28\nevent: price\ndata: {"symbol":"BTCUSDT"}\n\n'},
    },
}
