"""An example request and answer for every operation of database-service's /openapi.json."""

from __future__ import annotations

from typing import Any

from shared.openapi_examples import Example

SIGNAL_IN = {
    "symbol": "BTCUSDT",
    "action": "BUY",
    "price": 43250.5,
    "confidence": 0.8,
    "strategy": "momentum",
    "timeframe": "4h",
    "timestamp": "2026-11-24T10:00:00Z",
    "client_id": "order-1",
}
SIGNAL: dict[str, Any] = {
    "id": 1,
    **SIGNAL_IN,
    "timestamp": "2026-11-24T10:00:00.000000Z",
    "metadata": None,
    "created_at": "2026-11-24T10:00:00.120000Z",
}
TRADE_IN = {
    "symbol": "BTCUSDT",
    "side": "LONG",
    "entry_price": 43250.5,
    "exit_price": 44100,
    "quantity": 0.1,
    "fees": 0.5,
    "strategy": "momentum",
    "entry_time": "2026-11-24T10:00:00Z",
    "exit_time": "2026-11-24T14:00:00Z",
    "client_id": "fill-1",
}
TRADE: dict[str, Any] = {
    "id": 1,
    **TRADE_IN,
    "exit_price": 44100.0,
    "pnl": 84.45,
    "pnl_percent": 1.952578582906556,
    "outcome": "win",
    "signal_id": None,
    "entry_time": "2026-11-24T10:00:00.000000Z",
    "exit_time": "2026-11-24T14:00:00.000000Z",
    "duration_seconds": 14400.0,
    "metadata": None,
    "created_at": "2026-11-24T14:00:00.050000Z",
}
STATS = {
    "total_trades": 1,
    "wins": 1,
    "losses": 0,
    "breakeven": 0,
    "win_rate": 1.0,
    "total_pnl": 84.45,
    "average_pnl": 84.45,
    "average_win": 84.45,
    "average_loss": None,
    "profit_factor": None,
    "expectancy": 84.45,
    "max_drawdown": 0.0,
    "sqn": None,
    "best_trade": 84.45,
    "worst_trade": 84.45,
    "average_duration_seconds": 14400.0,
}
CONFLICT = {
    "error": "idempotency_conflict",
    "message": 'client_id "order-1" already stored with a different body: repeat the identical body '
    "to get the stored signal, or use a new client_id",
    "details": [{"field": "price", "message": "differs from the stored signal with client_id order-1"}],
}
EXAMPLES: dict[tuple[str, str], Example] = {
    ("/", "get"): {
        "responses": {
            "200": {
                "service": "database-service",
                "version": "0.1.0",
                "links": {
                    "docs": "/docs",
                    "health": "/health",
                    "openapi": "/openapi.json",
                    "metrics": "/metrics",
                },
                "routes": ["GET /", "GET /health", "POST /signals/save", "GET /signals/history"],
            }
        }
    },
    ("/livez", "get"): {"responses": {"200": {"status": "alive", "service": "database-service"}}},
    ("/readyz", "get"): {
        "responses": {
            "200": {
                "status": "ready",
                "service": "database-service",
                "checks": {"database": {"status": "ok", "detail": "postgresql"}},
            },
            "503": {
                "status": "not ready",
                "service": "database-service",
                "checks": {"database": {"status": "down", "detail": "OperationalError"}},
            },
        }
    },
    ("/health", "get"): {
        "responses": {
            "200": {
                "status": "healthy",
                "service": "database-service",
                "uptime_seconds": 12.5,
                "checks": {"database": {"status": "ok", "detail": "sqlite"}},
            }
        }
    },
    ("/stats", "get"): {
        "responses": {
            "200": {
                "service": "database-service",
                "backend": "sqlite",
                "signals": 1,
                "trades": 1,
                "migrations": ["0001_initial", "0002_stats_version"],
                "uptime_seconds": 12.5,
                "cache": "memory",
            }
        }
    },
    ("/metrics", "get"): {"responses": {"200": "sardag_signals_saved_total 1.0\n"}},
    ("/openapi.json", "get"): {
        "responses": {"200": {"openapi": "3.1.0", "info": {"title": "Sardag database-service"}}}
    },
    ("/docs", "get"): {"responses": {"200": "<!doctype html>..."}},
    ("/docs/init.js", "get"): {"responses": {"200": 'window.ui = SwaggerUIBundle({url: "openapi.json"});'}},
    ("/docs/assets/{name}", "get"): {"parameters": {"name": "swagger-ui.css"}, "responses": {"200": "..."}},
    ("/signals/save", "post"): {
        "body": SIGNAL_IN,
        "responses": {"201": SIGNAL, "200": SIGNAL, "422": CONFLICT},
    },
    ("/signals/history", "get"): {
        "parameters": {"symbol": "BTCUSDT", "strategy": "momentum", "limit": 10},
        "responses": {"200": {"signals": [SIGNAL], "count": 1, "next_cursor": None}},
    },
    ("/signals/{signal_id}", "get"): {"parameters": {"signal_id": 1}, "responses": {"200": SIGNAL}},
    ("/performance/track", "post"): {"body": TRADE_IN, "responses": {"201": TRADE, "200": TRADE}},
    ("/performance/trades", "get"): {
        "parameters": {"symbol": "BTCUSDT", "limit": 10},
        "responses": {"200": {"trades": [TRADE], "count": 1, "next_cursor": None}},
    },
    ("/performance/stats", "get"): {"parameters": {"strategy": "momentum"}, "responses": {"200": STATS}},
}
