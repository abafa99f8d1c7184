"""Named dependency checks behind `/health`, and the Kubernetes probes `/livez` and `/readyz`.

`/health` reports every check (healthy, degraded or unhealthy). `/livez` answers 200
whenever the process can answer at all, whatever its dependencies: a liveness probe that
followed PostgreSQL or Redis would restart healthy pods into an outage. `/readyz` runs only
the readiness checks (what this pod needs to serve now) and answers 503 until they pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify

from shared.lifecycle import required
from shared.secrets import app_secrets

EXTENSION = "sardag_health"
METRICS_EXTENSION = "sardag_metrics"  # shared.metrics.EXTENSION, when the app has metrics
OK, DEGRADED, DOWN = "ok", "degraded", "down"
# True/"ok", "degraded", or anything else for down; optionally paired with a detail
CheckResult = bool | str | tuple[bool | str, object]
CheckFunc = Callable[[], CheckResult]
log = logging.getLogger("shared.health_check")


@dataclass(frozen=True)
class Check:
    """One named check; a critical check that is down makes the service unhealthy."""

    name: str
    func: CheckFunc
    critical: bool = True


class HealthCheck:
    """Flask extension that runs named checks and serves `/health`."""

    def __init__(self, app: Flask | None = None) -> None:
        self.checks: dict[str, Check] = {}
        self.readiness: dict[str, Check] = {}
        self.started = time.monotonic()
        self.service = "app"
        self._gauge: Any = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register `/health` on `app`; with metrics, export each check's status at every scrape."""
        self.service = app.config.get("SERVICE_NAME", app.name)
        app.extensions[EXTENSION] = self
        app.add_url_rule("/health", "health", self.view, methods=["GET"])
        app.add_url_rule("/livez", "livez", self.live, methods=["GET"])
        app.add_url_rule("/readyz", "readyz", self.ready, methods=["GET"])
        metrics = app.extensions.get(METRICS_EXTENSION)
        if metrics is not None:
            self._gauge = metrics.gauge(
                "health_check",
                "1 for the current status (ok, degraded, down) of each /health check",
                ("check", "status"),
                multiprocess_mode="livemostrecent",
            )
            metrics.before_expose(self.run)

    def add_check(self, name: str, func: CheckFunc, critical: bool = True) -> None:
        """Add (or replace) a named check."""
        self.checks[name] = Check(name, func, critical)

    def add_readiness(self, name: str, func: CheckFunc) -> None:
        """Add (or replace) a check `/readyz` requires to be ok."""
        self.readiness[name] = Check(name, func, True)

    def run(self) -> dict[str, Any]:
        """Run every check and summarise."""
        results = {name: _run_one(check) for name, check in self.checks.items()}
        self._record(results)
        return {
            "status": self._overall(results),
            "service": self.service,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "checks": results,
        }

    def _overall(self, results: dict[str, dict[str, Any]]) -> str:
        if any(r["status"] == DOWN and self.checks[n].critical for n, r in results.items()):
            return "unhealthy"
        if any(r["status"] != OK for r in results.values()):
            return "degraded"
        return "healthy"

    def _record(self, results: dict[str, dict[str, Any]]) -> None:
        if self._gauge is None:
            return
        for name, result in results.items():
            for status in (OK, DEGRADED, DOWN):
                self._gauge.labels(check=name, status=status).set(1 if result["status"] == status else 0)

    def view(self) -> tuple[Response, int]:
        """The `/health` endpoint (secrets masked, as in the logs)."""
        report = self.run()
        status = 503 if report["status"] == "unhealthy" else 200
        response = jsonify(app_secrets(current_app).mask_deep(report))
        if status == 503:
            response.headers["Retry-After"] = "5"
        return response, status

    def live(self) -> Response:
        """The `/livez` endpoint: 200 while the process answers; no dependency is consulted."""
        return jsonify({"status": "alive", "service": self.service})

    def ready(self) -> tuple[Response, int]:
        """The `/readyz` endpoint: 200 when every readiness check is ok, else 503."""
        results = {name: _run_one(check) for name, check in self.readiness.items()}
        ready = all(r["status"] == OK for r in results.values())
        report = {"status": "ready" if ready else "not ready", "service": self.service, "checks": results}
        response = jsonify(app_secrets(current_app).mask_deep(report))
        if not ready:
            response.headers["Retry-After"] = "5"
        return response, 200 if ready else 503


PROBE_SCHEMA = {
    "type": "object",
    "required": ["status", "service"],
    "properties": {
        "status": {"type": "string", "enum": ["alive", "ready", "not ready"]},
        "service": {"type": "string"},
        "checks": {"type": "object"},
    },
}


def probe_paths(readiness: str) -> dict[str, Any]:
    """The OpenAPI path items of `/livez` and `/readyz`; `readiness` says what ready means."""
    body = {"application/json": {"schema": PROBE_SCHEMA}}
    return {
        "/livez": {
            "get": {
                "summary": "Liveness: the process answers (200 even while PostgreSQL or Redis is down)",
                "responses": {"200": {"description": "alive", "content": body}},
            }
        },
        "/readyz": {
            "get": {
                "summary": f"Readiness: {readiness}",
                "responses": {
                    "200": {"description": "ready to serve", "content": body},
                    "503": {"description": "not ready: see checks", "content": body},
                },
            }
        },
    }


def _run_one(check: Check) -> dict[str, Any]:
    try:
        outcome = check.func()
    except Exception as exc:  # a failing check is a result, not a crash
        log.warning("health check %s failed: %s", check.name, exc)
        return {"status": DOWN, "detail": public_reason(exc)}
    return _normalise(outcome)


def public_reason(exc: BaseException) -> str:
    """What /health may say about a failure: its `public_message` or its type, never its text.

    /health is public; a driver's message names hosts, ports, users and file paths. The
    full reason is in the log line above (secrets masked).
    """
    public = getattr(exc, "public_message", None)
    return public if isinstance(public, str) else type(exc).__name__


def _normalise(outcome: CheckResult) -> dict[str, Any]:
    if isinstance(outcome, tuple):
        status, detail = outcome
        return {"status": _normalise(status)["status"], "detail": detail}
    if outcome is True or outcome == OK:
        return {"status": OK}
    if outcome == DEGRADED:
        return {"status": DEGRADED}
    return {"status": DOWN}


def get_health(app: Flask | None = None, user: str = "get_health()") -> HealthCheck:
    """The health extension of `app` (default: the current app); `user` names who needs it."""
    return required(app or current_app, EXTENSION, HealthCheck, user)
