"""The baseline: a bare Flask route answering a small JSON object, nothing shared."""

from __future__ import annotations

from flask import Flask, jsonify


def create_app() -> Flask:
    """A plain Flask app with one route shaped like /price/<symbol>."""
    app = Flask(__name__)

    @app.get("/bare/<symbol>")
    def bare(symbol: str):  # type: ignore[no-untyped-def]
        return jsonify({"symbol": symbol.upper(), "price": "90000.00000000"})

    return app
