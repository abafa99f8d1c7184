"""websocket-streaming: the latest Binance price of every tracked symbol, over HTTP and SSE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from shared.app import create_base_app, on_shutdown, typed_config
from shared.health_check import get_health
from shared.metrics import get_metrics
from shared.request_pipeline import get_pipeline

from . import candle_routes, openapi
from .routes import EXTENSION, SLOTS_EXTENSION, bp, find_service, get_service
from .service import StreamingService
from .settings import DEFAULTS, SERVICE, SETTINGS, StreamingConfig, check
from .sse import SubscriberSlots

__all__ = ["create_app", "get_service", "start_ingest", "stop_ingest"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ingest starts in each serving process, at its first request at the latest.

    Nothing starts here: under `gunicorn --preload` this runs in the master, which forks
    the workers and never serves. The first request a process serves starts its ingest
    (a process-id check, so a forked worker starts its own); gunicorn.conf.py's
    post_worker_init starts it earlier, before any request.
    """
    app = create_base_app(
        "websocket_streaming",
        SERVICE,
        config,
        settings=SETTINGS,
        defaults=DEFAULTS,
        check=check,
        typed=StreamingConfig,
    )
    settings = typed_config(StreamingConfig, app)
    service = StreamingService(settings, get_metrics(app))
    app.extensions[EXTENSION] = service
    app.extensions[SLOTS_EXTENSION] = SubscriberSlots(
        settings.sse_max_subscribers,
        settings.sse_max_streams_per_client,
        get_metrics(app).gauge(
            "sse_subscribers", "Open /stream connections (summed over workers)", multiprocess_mode="livesum"
        ),
    )
    app.register_blueprint(bp)
    app.register_blueprint(candle_routes.bp)
    openapi.init_app(app)
    get_pipeline(app).add(before=lambda _request, _state: service.ensure_started())
    service.register_health(get_health(app))
    on_shutdown(app, service.stop)
    return app


def start_ingest(app: Flask) -> None:
    """Start ingest in this process now, rather than at its first request (post_worker_init).

    A no-op for an app that is not websocket-streaming (the bench's bare baseline).
    """
    service = find_service(app)
    if service is not None:
        service.ensure_started()


def stop_ingest(app: Flask) -> None:
    """Close the upstream connection, release the Redis lock, end the SSE streams."""
    service = find_service(app)
    if service is not None:
        service.stop()
