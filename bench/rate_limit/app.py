"""The benchmarked app: one trivial JSON route, variants that differ only in the limiter.

Every variant is built by `shared.app.create_base_app` (same logging, metrics, errors,
health, cache) with LOG_LEVEL=WARNING. Gunicorn loads one with `app:create_app("<variant>")`.
`redis-ping` is a calibration, not a limiter: the bare route plus one Redis PING, i.e. the
floor any limiter with one Redis round trip per request pays on this machine.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from flask import Flask

from shared.app import create_base_app
from shared.rate_limiter import MemoryBackend, get_limiter, rate_limit
from shared.redis_conn import redis_client

LIMITED = ("ours-memory", "ours-host", "ours-redis", "flask-limiter-memory", "flask-limiter-redis")
VARIANTS = ("bare", *LIMITED, "redis-ping")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
HIGH_LIMIT = 10_000_000  # per minute: far above what a run sends, so nothing is rejected
PROBE_LIMIT = 1  # per minute on /probe: proves the limiter is really engaged

View = Callable[[], Any]
Wrap = Callable[[View, int, str], View]


def ping() -> dict[str, Any]:
    """The benchmarked route: a constant JSON object."""
    return {"status": "ok"}


def probe() -> dict[str, Any]:
    """Same answer as /ping, under a limit of 1/minute."""
    return {"status": "ok"}


def redis_url() -> str:
    """The Redis database the bench uses (flushed by run.py)."""
    return os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)


def limits_url(url: str) -> str:
    """The same Redis in the URL spelling of `limits` (unix:// becomes redis+unix://)."""
    return "redis+" + url if url.startswith("unix://") else url


def create_app(variant: str) -> Flask:
    """Build the app for one variant of VARIANTS."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    ours = variant.startswith("ours-")
    app = create_base_app(__name__, "bench-rate-limit", _config(ours, variant == "ours-redis"))
    wrap = _ours_wrap if ours else _no_wrap
    if variant == "ours-memory":
        # each worker's own in-process store: what the limiter's code costs, as one worker pays
        # it (two workers without Redis get the host store: ours-host)
        get_limiter(app).backend = MemoryBackend()
    if variant.startswith("flask-limiter-"):
        wrap = _flask_limiter_wrap(app, variant.endswith("redis"))
    elif variant == "redis-ping":
        wrap = _redis_ping_wrap()
    app.add_url_rule("/ping", "ping", wrap(ping, HIGH_LIMIT, "ping"))
    app.add_url_rule("/probe", "probe", wrap(probe, PROBE_LIMIT, "probe"))
    return app


def _config(ours_enabled: bool, ours_on_redis: bool) -> dict[str, Any]:
    return {
        "LOG_LEVEL": "WARNING",
        "BIND": "127.0.0.1",
        "TRUSTED_PROXIES": 0,
        "SENTRY_DSN": None,
        "RATE_LIMIT_ENABLED": ours_enabled,
        "REDIS_URL": redis_url() if ours_on_redis else None,
    }


def _no_wrap(view: View, limit: int, scope: str) -> View:
    return view


def _ours_wrap(view: View, limit: int, scope: str) -> View:
    return rate_limit(limit, scope=scope)(view)


def _redis_ping_wrap() -> Wrap:
    client = redis_client(redis_url())

    def wrap(view: View, limit: int, scope: str) -> View:
        @functools.wraps(view)
        def pinged() -> Any:
            client.ping()
            return view()

        return pinged

    return wrap


def _flask_limiter_wrap(app: Flask, on_redis: bool) -> Wrap:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    storage = limits_url(redis_url()) if on_redis else "memory://"
    limiter = Limiter(get_remote_address, app=app, storage_uri=storage, strategy="moving-window")

    def wrap(view: View, limit: int, scope: str) -> View:
        return limiter.limit(f"{limit} per minute")(view)

    return wrap
