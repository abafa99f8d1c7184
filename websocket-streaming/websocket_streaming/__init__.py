"""websocket-streaming: the latest Binance price of every tracked symbol, over HTTP and SSE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from shared.app import create_base_app, on_shutdown
from shared.config import ConfigError
from shared.health_check import get_health
from shared.metrics import get_metrics

from . import openapi
from .routes import EXTENSION, bp
from .service import StreamingService, combined_url, stream_names
from .settings import SETTINGS
from .sse import SubscriberSlots

__all__ = ["create_app", "get_service", "start_ingest", "stop_ingest"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ingest starts later, in the serving process (see `start_ingest`)."""
    app = create_base_app(
        "websocket_streaming", "websocket-streaming", config, settings=SETTINGS, defaults={"PORT": 5021}
    )
    _check_streams(app.config)
    service = StreamingService(app.config, get_metrics(app))
    app.extensions[EXTENSION] = service
    app.extensions[f"{EXTENSION}.sse"] = SubscriberSlots(int(app.config["SSE_MAX_SUBSCRIBERS"]))
    app.register_blueprint(bp)
    openapi.init_app(app)
    health = get_health(app)
    health.add_check("ingest", lambda: _ingest_check(service), critical=True)
    health.add_check("upstream", lambda: _upstream_check(service), critical=False)
    on_shutdown(app, service.stop)
    return app


def get_service(app: Flask) -> StreamingService:
    """The ingest service of `app`."""
    return app.extensions[EXTENSION]


def start_ingest(app: Flask) -> None:
    """Start ingest in this process (call after fork: gunicorn's post_worker_init does).

    A no-op for an app that is not websocket-streaming (the bench's bare baseline).
    """
    if EXTENSION in app.extensions:
        get_service(app).start()


def stop_ingest(app: Flask) -> None:
    """Close the upstream connection, release the Redis lock, end the SSE streams."""
    if EXTENSION in app.extensions:
        get_service(app).stop()


def _check_streams(config: Mapping[str, Any]) -> None:
    streams = stream_names(tuple(config["SYMBOLS"]), tuple(config["WS_STREAMS"]))
    try:
        combined_url(config["BINANCE_WS_URL"], streams)
    except ValueError as exc:
        raise ConfigError("SYMBOLS", str(exc)) from None


def _ingest_check(service: StreamingService) -> tuple[str, object]:
    """Critical: down only when a thread the service needs has died."""
    if not service.started:
        return "ok", "ingest not started in this process"
    if not service.alive():
        return "down", "an ingest thread died"
    return "ok", service.role


def _upstream_check(service: StreamingService) -> tuple[str, dict[str, object]]:
    """Feed freshness: degraded while disconnected or silent longer than the stale limit."""
    stats = service.stats
    age = service.newest_update_age()
    detail: dict[str, object] = {
        "role": service.role,
        "connected": service.upstream is not None and stats.connected,
        "last_message_age_seconds": None if (a := stats.last_message_age()) is None else round(a, 3),
        "newest_price_age_seconds": age,
        "reconnects": stats.reconnects,
    }
    if service.bridge is not None:
        detail["redis"] = "ok" if service.bridge.healthy else "unreachable"
    fresh = age is not None and age <= service.stale_after
    ok = fresh and (service.role == "follower" or detail["connected"])
    return ("ok" if ok else "degraded"), detail
