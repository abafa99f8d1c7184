"""The base app factory both services start from: config, logging, errors, extensions."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from flask import Flask, Request, Response, current_app, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import __version__, docs_page, errors, logger, sentry_integration, tracing
from shared.config import Check, Setting, SharedConfig, load_config
from shared.health_check import HealthCheck
from shared.lifecycle import on_shutdown, shutdown
from shared.metrics import Metrics
from shared.rate_limiter import RateLimiter
from shared.redis_cache import Cache
from shared.request_pipeline import RequestState, get_pipeline

__all__ = ["MAX_BODY_BYTES", "ServiceFlask", "create_base_app", "on_shutdown", "shutdown", "typed_config"]

MAX_BODY_BYTES = 1024 * 1024
# What `/` links to, when the app has the route: name -> path.
INDEX_LINKS = {"docs": "/docs", "health": "/health", "openapi": "/openapi.json", "metrics": "/metrics"}
# The JSON Schema of what `/` answers, for each service's OpenAPI document.
INDEX_SCHEMA = {
    "type": "object",
    "required": ["service", "version", "links"],
    "properties": {
        "service": {"type": "string"},
        "version": {"type": "string"},
        "links": {"type": "object", "additionalProperties": {"type": "string"}},
        "routes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "every route as METHOD /path, the path as /openapi.json writes it",
        },
    },
}
_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
CONFIG_EXTENSION = "sardag_config"
C = TypeVar("C", bound=SharedConfig)


class ServiceFlask(Flask):
    """Flask whose `ensure_sync` remembers its answer per function.

    Flask asks `inspect.iscoroutinefunction` of every hook and view on every request
    (about 1.5 us each); the answer never changes for a registered function.
    """

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """The sync-callable form of `func`, computed once per function."""
        cache: dict[Callable[..., Any], Callable[..., Any]] = self.__dict__.setdefault("_sync_cache", {})
        wrapped = cache.get(func)
        if wrapped is None:
            wrapped = cache[func] = super().ensure_sync(func)
        return wrapped


def create_base_app(
    import_name: str,
    service: str,
    config: Mapping[str, Any] | None = None,
    *,
    settings: Iterable[Setting] = (),
    defaults: Mapping[str, Any] | None = None,
    check: Check | None = None,
    typed: type[SharedConfig] = SharedConfig,
) -> Flask:
    """A Flask app with config loaded (and typed, as `typed`) and every shared extension initialised."""
    app = ServiceFlask(import_name)
    app.config.update(load_config(service, config, settings=settings, defaults=defaults, check=check))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    built = app.extensions[CONFIG_EXTENSION] = typed.from_config(app.config)
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False
    hops = built.trusted_proxies
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    logger.init_app(app)  # first: every later step and error answer has the request id
    get_pipeline(app).add(before=_reject_large_bodies)
    errors.init_app(app)
    Metrics(app)
    HealthCheck(app)
    sentry_integration.init_app(app)
    tracing.init_app(app)  # after Metrics: it counts the spans it drops
    Cache(app)
    RateLimiter(app)
    app.add_url_rule("/", "index", _index, methods=["GET"])
    docs_page.init_app(app)
    return app


def typed_config(kind: type[C], app: Flask | None = None) -> C:
    """The typed configuration `create_base_app` built for `app` (default: the current app)."""
    found = (app or current_app).extensions.get(CONFIG_EXTENSION)
    if not isinstance(found, kind):
        raise TypeError(f"the app holds {type(found).__name__}, not {kind.__name__}: built by another service?")
    return found


def _index() -> Response:
    """`/`: which service this is, its version, where to look next and every route."""
    routes = {rule.rule for rule in current_app.url_map.iter_rules()}
    if "/openapi.json" not in routes:
        routes.discard("/docs")  # a page of a document the app does not have
    links = {name: path for name, path in INDEX_LINKS.items() if path in routes}
    body = {"service": current_app.config["SERVICE_NAME"], "version": __version__, "links": links}
    return jsonify({**body, "routes": route_list(current_app)})


def route_list(app: Flask) -> list[str]:
    """Every route of `app` as `METHOD /path` (`/signals/{signal_id}`), sorted by path."""
    found: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = _VARIABLE.sub(r"{\1}", rule.rule)
        found.update((path, method) for method in rule.methods or () if method not in ("HEAD", "OPTIONS"))
    return [f"{method} {path}" for path, method in sorted(found)]


def _reject_large_bodies(req: Request, state: RequestState) -> None:
    # Declared lengths are refused before any view runs; undeclared (chunked) bodies are
    # cut off by MAX_CONTENT_LENGTH when a view reads them.
    declared = req.environ.get("CONTENT_LENGTH")
    if declared and req.content_length is not None and req.content_length > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
