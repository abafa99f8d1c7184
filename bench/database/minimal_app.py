"""The single-save baseline: a minimal Flask route, one `INSERT ... RETURNING` and a commit per request.

No validation, logging, metrics or pool beyond one psycopg2 connection per thread: what a
save costs with nothing but the web server, Flask, JSON and the database's own commit.
bench/database/run.py serves it with the same gunicorn settings as database-service
(`gunicorn -c bench/database/gunicorn.conf.py "minimal_app:create_app()"`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import psycopg2
from flask import Flask, jsonify, request

INSERT = (
    "INSERT INTO signals (symbol, action, price, confidence, strategy, timeframe, ts) "
    "VALUES (%s, %s, %s, %s, %s, %s, now()) RETURNING id, ts, created_at"
)


def probe_app(name: str) -> tuple[Flask, Callable[[], Any]]:
    """A Flask app with GET /health, and one psycopg2 connection per serving thread."""
    app = Flask(name)
    url = os.environ["DATABASE_URL"]
    local = threading.local()

    def connection() -> Any:
        if getattr(local, "conn", None) is None:
            local.conn = psycopg2.connect(url)
        return local.conn

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "healthy"}

    return app, connection


def create_app() -> Flask:
    """The app: POST /signals/save and GET /health."""
    app, connection = probe_app(__name__)

    @app.post("/signals/save")
    def save() -> tuple[Any, int]:
        body = request.get_json()
        conn = connection()
        with conn.cursor() as cur:
            fields = ("symbol", "action", "price", "confidence", "strategy", "timeframe")
            cur.execute(INSERT, [body.get(name) for name in fields])
            signal_id, ts, created = cur.fetchone()
        conn.commit()
        return jsonify(
            {"id": signal_id, **body, "timestamp": ts.isoformat(), "created_at": created.isoformat()}
        ), 201

    return app
