"""Routes /stats and /openapi.json."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify

from database_service.openapi import build_openapi
from database_service.settings import DatabaseConfig
from database_service.state import service_state
from database_service.storage import get_storage
from shared.app import typed_config
from shared.auth import api_keys
from shared.redis_cache import get_cache

bp = Blueprint("meta", __name__)


@bp.get("/stats")
def service_stats() -> Response:
    """Counts (at most COUNTS_MAX_AGE s old), storage backend, applied migrations and uptime."""
    storage = get_storage()
    state = service_state()
    counts, migrations = state.stats_counts.get(lambda: (storage.counts(), storage.applied_migrations()))
    return jsonify(
        {
            "service": typed_config(DatabaseConfig).service_name,
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
