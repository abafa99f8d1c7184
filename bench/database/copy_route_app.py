"""Probe for bench/database/limits.py: what HTTP and the batch contract cost around a COPY.

POST /signals/save takes a JSON array and COPYs it into signals with one commit, nothing
else. `?answer=1` answers all the signals as database-service does (dicts built without
validation); `?validate=1` also parses with Decimal and validates every row with the
service's own models. Not a baseline: a ruler for the gap between COPY and the service.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import Flask, jsonify, request
from minimal_app import probe_app

FIELDS = ("symbol", "action", "price", "confidence", "strategy", "timeframe")
COPY = f"COPY signals ({', '.join(FIELDS)}, ts) FROM STDIN"


def create_app() -> Flask:
    """The probe app: POST /signals/save and GET /health."""
    from database_service.parsing import validate_batch
    from database_service.signals import BATCH, CORE_BATCH

    app, connection = probe_app(__name__)

    @app.post("/signals/save")
    def save() -> tuple[Any, int]:
        if request.args.get("validate"):
            body = json.loads(request.get_data(), parse_float=Decimal)
            validate_batch(CORE_BATCH, BATCH, body)
        else:
            body = request.get_json()
        now = datetime.now(UTC).isoformat()
        text = "".join("\t".join(str(row[k]) for k in FIELDS) + f"\t{now}\n" for row in body)
        conn = connection()
        with conn.cursor() as cur:
            cur.copy_expert(COPY, io.StringIO(text))
        conn.commit()
        if not request.args.get("answer"):
            return jsonify({"count": len(body)}), 201
        signals = [
            {
                "id": i,
                **{k: row[k] for k in ("symbol", "action")},
                "price": float(row["price"]),
                "confidence": float(row["confidence"]),
                **{k: row[k] for k in ("strategy", "timeframe")},
                "timestamp": now,
                "metadata": None,
                "client_id": None,
                "created_at": now,
            }
            for i, row in enumerate(body)
        ]
        return jsonify({"count": len(body), "created": len(body), "signals": signals}), 201

    return app
