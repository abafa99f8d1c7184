"""websocket-streaming: the latest Binance price of every tracked symbol, over HTTP and SSE."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from shared.app import create_base_app, on_shutdown
from shared.health_check import get_health
from shared.metrics import get_metrics
from shared.request_pipeline import get_pipeline

from . import candle_routes, openapi
from .routes import EXTENSION, bp, get_service
from .service import StreamingService
from .settings import DEFAULTS, SERVICE, SETTINGS, check
from .sse import SubscriberSlots
from .upstream import host_of

__all__ = ["create_app", "get_service", "start_ingest", "stop_ingest"]
OFFLINE_HINT = (
    "{host} cannot be resolved (no internet or no DNS?); "
    "`make run-offline` (FEED=fake) runs the shipped fake exchange as the feed"
)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ingest starts in each serving process, at its first request at the latest.

    Nothing starts here: under `gunicorn --preload` this runs in the master, which forks
    the workers and never serves. The first request a process serves starts its ingest
    (a process-id check, so a forked worker starts its own); gunicorn.conf.py's
    post_worker_init starts it earlier, before any request.
    """
    app = create_base_app(
        "websocket_streaming", SERVICE, config, settings=SETTINGS, defaults=DEFAULTS, check=check
    )
    service = StreamingService(app.config, get_metrics(app))
    app.extensions[EXTENSION] = service
    app.extensions[f"{EXTENSION}.sse"] = SubscriberSlots(
        int(app.config["SSE_MAX_SUBSCRIBERS"]),
        int(app.config["SSE_MAX_STREAMS_PER_CLIENT"]),
        get_metrics(app).gauge(
            "sse_subscribers", "Open /stream connections (summed over workers)", multiprocess_mode="livesum"
        ),
    )
    app.register_blueprint(bp)
    app.register_blueprint(candle_routes.bp)
    openapi.init_app(app)
    get_pipeline(app).add(before=lambda _request, _state: service.ensure_started())
    health = get_health(app)
    health.add_check("ingest", lambda: _ingest_check(service), critical=True)
    health.add_check("upstream", lambda: _upstream_check(service), critical=False)
    health.add_readiness("price", lambda: _price_ready(service))
    on_shutdown(app, service.stop)
    return app


def start_ingest(app: Flask) -> None:
    """Start ingest in this process now, rather than at its first request (post_worker_init).

    A no-op for an app that is not websocket-streaming (the bench's bare baseline).
    """
    if EXTENSION in app.extensions:
        get_service(app).ensure_started()


def stop_ingest(app: Flask) -> None:
    """Close the upstream connection, release the Redis lock, end the SSE streams."""
    if EXTENSION in app.extensions:
        get_service(app).stop()


def _ingest_check(service: StreamingService) -> tuple[str, object]:
    """Critical: down whenever this serving process has no running ingest."""
    if service.start_error is not None:
        return "down", f"ingest did not start: {service.start_error}"
    if not service.running_here():
        return "down", "ingest not running in this process"
    config = service.config
    if not config["INGEST_ENABLED"] and not config.get("REDIS_URL"):
        return "down", "INGEST_ENABLED=0 without REDIS_URL: nothing feeds this process"
    if not service.alive():
        return "down", "an ingest thread died"
    return "ok", service.role


def _price_ready(service: StreamingService) -> tuple[bool, object]:
    """Ready: this process's book holds a price no older than PRICE_STALE_SECONDS."""
    age = service.newest_update_age()
    return age is not None and age <= service.stale_after, {"newest_price_age_seconds": age}


def _upstream_check(service: StreamingService) -> tuple[str, dict[str, object]]:
    """Feed freshness: degraded while disconnected or silent longer than the stale limit.

    While the feed cannot connect, says why: the upstream host (never credentials), the
    last error, and how to run offline when the host cannot be resolved.
    """
    stats = service.stats
    age = service.newest_update_age()
    host = host_of(service.config["BINANCE_WS_URL"])
    detail: dict[str, object] = {
        "role": service.role,
        "host": host,
        "connected": service.upstream is not None and stats.connected,
        "last_message_age_seconds": None if (a := stats.last_message_age()) is None else round(a, 3),
        "newest_price_age_seconds": age,
        "reconnects": stats.reconnects,
    }
    upstream = service.upstream
    if upstream is not None:
        state = upstream.status()
        detail.update(
            lines=state["lines"],
            last_error=state["last_error"],
            last_error_age_seconds=state["last_error_age_seconds"],
        )
        if state["unresolved"]:
            detail["hint"] = OFFLINE_HINT.format(host=host)
    if service.bridge is not None:
        detail["redis"] = "ok" if service.bridge.healthy else "unreachable"
    silent = service.watch.silent
    if silent:
        detail["silent_streams"] = list(silent)
    fresh = age is not None and age <= service.stale_after
    ok = fresh and not silent and (service.role == "follower" or detail["connected"])
    return ("ok" if ok else "degraded"), detail
