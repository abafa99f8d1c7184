"""Routes /stats and /openapi.json."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from database_service.openapi import build_openapi
from database_service.storage import get_storage
from shared.auth import api_keys
from shared.redis_cache import get_cache

bp = Blueprint("meta", __name__)
COUNTS_MAX_AGE = 10.0  # seconds /stats may answer counts from before (an exact count scans the tables)


class Recent:
    """A value recomputed at most every `max_age` seconds, by one thread at a time.

    `/stats` is public: computed per request, its exact count(*) (hundreds of ms at
    millions of rows) would let any client keep the database busy.
    """

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._value: Any = None
        self._taken = -float("inf")
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """Recompute at the next `get` (this process changed what the value counts)."""
        self._taken = -float("inf")

    def get(self, compute: Callable[[], Any]) -> Any:
        """The value, recomputed first when older than `max_age`."""
        if time.monotonic() - self._taken < self.max_age:
            return self._value
        with self._lock:  # the others wait for this one's answer rather than count too
            if time.monotonic() - self._taken >= self.max_age:
                self._value, self._taken = compute(), time.monotonic()
            return self._value


@bp.get("/stats")
def service_stats() -> Response:
    """Counts (at most COUNTS_MAX_AGE s old), storage backend, applied migrations and uptime."""
    storage = get_storage()
    state = current_app.extensions["database_service"]
    counts, migrations = state.stats_counts.get(lambda: (storage.counts(), storage.applied_migrations()))
    return jsonify(
        {
            "service": current_app.config["SERVICE_NAME"],
            "backend": storage.backend,
            **counts,
            "migrations": migrations,
            "uptime_seconds": round(time.monotonic() - state.started, 3),
            "cache": get_cache().backend,
        }
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document, built from the validating models (security: when keys are set)."""
    return jsonify(build_openapi(secured=api_keys().required))
