"""Routes /stats and /openapi.json."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify

from database_service.openapi import build_openapi
from database_service.storage import get_storage
from shared.auth import api_keys
from shared.redis_cache import get_cache

bp = Blueprint("meta", __name__)


@bp.get("/stats")
def service_stats() -> Response:
    """Counts, storage backend, applied migrations and uptime."""
    storage = get_storage()
    state = current_app.extensions["database_service"]
    return jsonify(
        {
            "service": current_app.config["SERVICE_NAME"],
            "backend": storage.backend,
            **storage.counts(),
            "migrations": storage.applied_migrations(),
            "uptime_seconds": round(time.monotonic() - state.started, 3),
            "cache": get_cache().backend,
        }
    )


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document, built from the validating models (security: when keys are set)."""
    return jsonify(build_openapi(secured=api_keys().required))
