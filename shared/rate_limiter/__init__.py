"""Exact sliding-window rate limiting for Flask views, in-process, host-wide or on Redis.

`@rate_limit(requests_per_minute=100, scope="signals_save")` limits one view; routes with
no decorator get `RATE_LIMIT_DEFAULT`. Both decide through `RateLimiter.admit`, which
answers 429 with the one rejection builder. The backend is chosen by URL like the `limits`
library: `redis://...` or `redis+sentinel://...` (from `REDIS_URL`); else `file:///path`,
the store a gunicorn master with several workers shares among them (`SARDAG_RATE_LIMIT_HOST_STORE`, set by
shared/gunicorn_hooks.py); else `memory://` (one process).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Request, Response, current_app, g, request

from shared.errors import error_response
from shared.rate_limiter.base import Backend, RateLimitResult
from shared.rate_limiter.failover import FailoverBackend
from shared.rate_limiter.host import HOST_ERRORS, HOST_STORE_ENV, HostBackend, host_store_path
from shared.rate_limiter.memory import MemoryBackend
from shared.rate_limiter.redis_backend import RedisBackend
from shared.redis_conn import (
    FAST_TIMEOUT,
    PLAIN_SCHEMES,
    SENTINEL_SCHEMES,
    CircuitBreaker,
    app_breaker,
    fallback_counter,
    redis_client,
    reprobe_seconds,
)
from shared.request_pipeline import get_pipeline

__all__ = [
    "Backend",
    "FailoverBackend",
    "HostBackend",
    "MemoryBackend",
    "RateLimitResult",
    "RateLimiter",
    "RedisBackend",
    "client_ip",
    "rate_limit",
    "storage_from_url",
]

EXTENSION = "sardag_rate_limiter"
EXEMPT_ENDPOINTS = frozenset({"health", "livez", "readyz", "metrics", "static"})
F = TypeVar("F", bound=Callable[..., Any])


def client_ip() -> str:
    """The client's rate-limit key: its address (the socket peer, or the X-Forwarded-For hop
    ProxyFix trusts), an IPv6 one as its /RATE_LIMIT_IPV6_PREFIX network."""
    return _address(request, int(current_app.config.get("RATE_LIMIT_IPV6_PREFIX", 64)))


def _address(req: Request, ipv6_prefix: int) -> str:
    address = req.remote_addr or "unknown"
    return client_key(address, ipv6_prefix) if ":" in address else address


@functools.lru_cache(maxsize=4096)
def client_key(address: str, ipv6_prefix: int = 64) -> str:
    """The key of a client address: an IPv4 address itself; an IPv6 one its network.

    One IPv6 host usually holds a whole /64 and picks a new address from it at will, so
    keying the full address would give it 2^64 budgets. An IPv4-mapped address is its IPv4.
    """
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


def storage_from_url(
    url: str,
    max_keys: int = 100_000,
    on_fallback: Callable[[], None] = lambda: None,
    timeout: float = FAST_TIMEOUT,
    breaker: CircuitBreaker | None = None,
) -> Backend:
    """Build a backend from `memory://`, `file:///path` or a Redis URL (Sentinel too).

    The shared stores fail open to the in-process backend while they fail.
    """
    if url.startswith("memory://"):
        return MemoryBackend(max_keys=max_keys)
    if url.split("://", 1)[0] in (*PLAIN_SCHEMES, *SENTINEL_SCHEMES):
        primary = RedisBackend(redis_client(url, timeout=timeout))
        breaker = breaker or CircuitBreaker("rate limiter", reprobe_seconds(url))
        return FailoverBackend(primary, MemoryBackend(max_keys), breaker, on_fallback)
    if url.startswith("file://"):
        host = HostBackend(host_store_path(url), max_keys)
        breaker = CircuitBreaker("rate limiter", store=f"host store {host.path}")
        return FailoverBackend(host, MemoryBackend(max_keys), breaker, on_fallback, errors=HOST_ERRORS)
    raise ValueError(f"unknown rate-limit storage URL {url!r}")


def storage_url(config: Any) -> str:
    """REDIS_URL when set; else the host store a gunicorn master shares; else in-process."""
    return config.get("REDIS_URL") or os.environ.get(HOST_STORE_ENV) or "memory://"


class RateLimiter:
    """Flask extension: holds the backend and the per-scope limits of one app."""

    def __init__(self, app: Flask | None = None, backend: Backend | None = None) -> None:
        self.backend = backend
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Pick the backend from config, register hooks, metrics and a health check."""
        from shared.health_check import get_health
        from shared.metrics import get_metrics

        metrics, health = get_metrics(app, "RateLimiter"), get_health(app, "RateLimiter")
        self.rejections = metrics.counter("rate_limited_total", "Requests rejected (429)", ("scope",))
        self.config = app.config
        self._limits: dict[tuple[str, int | None], int] = {}
        self._rejected: dict[str, Any] = {}
        self._bodies: dict[int, bytes] = {}
        if self.backend is None:
            url = storage_url(app.config)
            on_fallback = fallback_counter(metrics, "rate_limiter")
            self.backend = storage_from_url(
                url,
                app.config["RATE_LIMIT_MAX_KEYS"],
                on_fallback,
                app.config["REDIS_TIMEOUT_SECONDS"],
                app_breaker(app),
            )
        app.extensions[EXTENSION] = self
        self._view_functions = app.view_functions
        get_pipeline(app).add(before=self._limit_undecorated_route, after=_add_headers)
        if isinstance(self.backend, FailoverBackend):
            health.add_check(f"rate_limiter_{self.backend.name}", self.health, critical=False)

    @property
    def enabled(self) -> bool:
        """False when RATE_LIMIT_ENABLED=0."""
        return bool(self.config.get("RATE_LIMIT_ENABLED", True))

    def limit_for(self, scope: str, default: int | None) -> int:
        """The env override for `scope`, else the decorator's value, else the default."""
        limit = self._limits.get((scope, default))
        if limit is None:
            override = self.config.get("RATE_LIMITS", {}).get(scope)
            limit = int(override or default or self.config["RATE_LIMIT_DEFAULT"])
            self._limits[(scope, default)] = limit
        return limit

    def decide(self, scope: str, key: str, limit: int, state: Any) -> RateLimitResult:
        """Decide one request and keep the result on `state` (the request's `g`) for the headers."""
        assert self.backend is not None
        window = self.config["RATE_LIMIT_WINDOW_SECONDS"]
        result = state.rate_limit_result = self.backend.hit(f"{scope}:{key}", limit, window)
        if not result.allowed:
            counter = self._rejected.get(scope)
            if counter is None:
                counter = self._rejected[scope] = self.rejections.labels(scope=scope)
            counter.inc()
        return result

    def admit(self, scope: str, key: str, limit: int, state: Any) -> Response | None:
        """The one decision of every limited request: None when it may go on, else its 429."""
        result = self.decide(scope, key, limit, state)
        return None if result.allowed else self.rejection(result)

    def rejection(self, result: RateLimitResult) -> Response:
        """The 429 answer for a rejected result (its body built once per limit)."""
        body = self._bodies.get(result.limit)
        if body is None:
            body = self._bodies[result.limit] = error_response("rate_limited", _message(result.limit), 429).data
        # content_type, then add: a third cheaper than Response(headers=..., mimetype=...)
        response = Response(body, 429, content_type="application/json")
        response.headers.add("Retry-After", result.retry_after_header)
        return response

    def _limit_undecorated_route(self, req: Request, state: Any) -> Response | None:
        endpoint = req.endpoint
        if not self.enabled or endpoint is None or endpoint in EXEMPT_ENDPOINTS:
            return None
        view = self._view_functions.get(endpoint)
        if view is None or hasattr(view, "rate_limit_scope"):
            return None  # a decorated view decides itself, under its own scope
        prefix = int(self.config.get("RATE_LIMIT_IPV6_PREFIX", 64))
        return self.admit(endpoint, _address(req, prefix), self.limit_for(endpoint, None), state)

    def health(self) -> tuple[str, str]:
        """`degraded` while limiting in-process because the shared store is unreachable."""
        name = self.backend.name if self.backend is not None else "memory"
        if isinstance(self.backend, FailoverBackend) and not self.backend.reachable():
            return "degraded", f"{name} unreachable; limiting in-process"
        return "ok", name


def get_limiter(app: Flask | None = None) -> RateLimiter:
    """The rate-limiter extension of `app` (default: the current app)."""
    found: RateLimiter = (app or current_app).extensions[EXTENSION]
    return found


def rate_limit(
    requests_per_minute: int | None = None,
    key_func: Callable[[], str] = client_ip,
    scope: str | None = None,
) -> Callable[[F], F]:
    """Limit a view to N requests per minute per client (exact sliding window)."""

    def decorator(view: F) -> F:
        name = scope or view.__name__

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            limiter = current_app.extensions.get(EXTENSION)
            if limiter is not None and limiter.enabled:
                limit = limiter.limit_for(name, requests_per_minute)
                rejected = limiter.admit(name, key_func(), limit, g._get_current_object())
                if rejected is not None:
                    return rejected
            return view(*args, **kwargs)

        wrapper.rate_limit_scope = name  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def _message(limit: int) -> str:
    return f"Rate limit of {limit} requests per minute exceeded; retry later."


def _add_headers(req: Request, state: Any, response: Response) -> None:
    result: RateLimitResult | None = getattr(state, "rate_limit_result", None)
    if result is not None:
        # add, not set: the headers are new, and add skips set's scan for existing ones
        headers = response.headers
        headers.add("X-RateLimit-Limit", str(result.limit))
        headers.add("X-RateLimit-Remaining", str(result.remaining))
        headers.add("X-RateLimit-Reset", result.reset_header)
