"""A small app built on the shared base, used by the shared tests (and gunicorn in them)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response

from shared.app import create_base_app
from shared.auth import require_api_key
from shared.errors import unavailable
from shared.rate_limiter import rate_limit

# A loaded test machine can take longer than the production 50 ms to answer; the outage
# tests use refused connections, which fail at once whatever the timeout.
BASE_CONFIG: dict[str, Any] = {
    "TESTING": True,
    "LOG_LEVEL": "WARNING",
    "SENTRY_DSN": "",
    "REDIS_TIMEOUT_SECONDS": 1.0,
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The test app: limited routes, a default-limited route, a write and failures."""
    app = create_base_app(__name__, "support-app", config)

    @app.get("/limited")
    @rate_limit(requests_per_minute=50, scope="limited")
    def limited() -> dict[str, str]:
        return {"ok": "limited"}

    @app.get("/hundred")
    @rate_limit(requests_per_minute=100, scope="hundred")
    def hundred() -> dict[str, str]:
        return {"ok": "hundred"}

    @app.get("/price/<symbol>")
    @rate_limit(requests_per_minute=300, scope="price")
    def price(symbol: str) -> dict[str, str]:
        return {"symbol": symbol}

    @app.get("/slow/<symbol>")
    def slow(symbol: str) -> dict[str, str]:
        time.sleep(0.01)  # holds a sync worker, so concurrent clients spread over workers
        return {"symbol": symbol}

    @app.get("/plain")
    def plain() -> dict[str, str]:
        return {"ok": "plain"}

    @app.post("/write")
    @require_api_key
    def write() -> tuple[dict[str, str], int]:
        return {"ok": "written"}, 201

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/down")
    def down() -> None:
        raise unavailable("no price yet", retry_after=3)

    @app.after_request
    def tag_worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
