"""Named dependency checks behind `/health`, and the Kubernetes probes `/livez` and `/readyz`.

`/health` reports every dependency (healthy, degraded or unhealthy). `/livez` only says the
process can answer: it runs no check, so a PostgreSQL or Redis outage never makes an
orchestrator restart healthy pods into it. `/readyz` runs the readiness checks only (what
this pod needs to serve now) and answers 503 while any is not ok.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, jsonify

from shared.lifecycle import required

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
        app.add_url_rule("/livez", "livez", self.live_view, methods=["GET"])
        app.add_url_rule("/readyz", "readyz", self.ready_view, methods=["GET"])
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
        """Add (or replace) a check `/readyz` needs ok before this pod takes traffic."""
        self.readiness[name] = Check(name, func, critical=True)

    def run(self) -> dict[str, Any]:
        """Run every check and summarise."""
        results = {name: _run_one(check) for name, check in self.checks.items()}
        self._record(results)
        return {
            "status": self._overall(results),
            "service": self.service,
            "uptime_seconds": self._uptime(),
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
        """The `/health` endpoint."""
        report = self.run()
        status = 503 if report["status"] == "unhealthy" else 200
        response = jsonify(report)
        if status == 503:
            response.headers["Retry-After"] = "5"
        return response, status

    def live_view(self) -> tuple[Response, int]:
        """The `/livez` endpoint: 200 whenever the process can answer, whatever its dependencies."""
        return jsonify({"status": "alive", "service": self.service, "uptime_seconds": self._uptime()}), 200

    def ready_view(self) -> tuple[Response, int]:
        """The `/readyz` endpoint: 200 when every readiness check is ok, else 503."""
        results = {name: _run_one(check) for name, check in self.readiness.items()}
        ready = all(result["status"] == OK for result in results.values())
        status = "ready" if ready else "not ready"
        response = jsonify({"status": status, "service": self.service, "checks": results})
        if not ready:
            response.headers["Retry-After"] = "5"
        return response, 200 if ready else 503

    def _uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _run_one(check: Check) -> dict[str, Any]:
    try:
        outcome = check.func()
    except Exception as exc:  # a failing check is a result, not a crash
        log.warning("health check %s failed: %s", check.name, exc)
        return {"status": DOWN, "detail": f"{type(exc).__name__}: {exc}"}
    return _normalise(outcome)


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


def probe_paths(ready: str) -> dict[str, Any]:
    """OpenAPI path items of `/livez` and `/readyz`; `ready` says what readiness means here."""
    body = {"application/json": {"schema": {"type": "object", "required": ["status", "service"]}}}
    return {
        "/livez": {
            "get": {
                "summary": "Liveness: the process can answer (no dependency is checked)",
                "responses": {"200": {"description": "alive", "content": body}},
            }
        },
        "/readyz": {
            "get": {
                "summary": f"Readiness: {ready}",
                "responses": {
                    "200": {"description": "ready", "content": body},
                    "503": {"description": "not ready: a readiness check is down", "content": body},
                },
            }
        },
    }
