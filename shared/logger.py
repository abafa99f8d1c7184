"""Structured logging: JSON lines, and one access line per request with a request id."""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object; extra attributes become fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class RequestIdFilter(logging.Filter):
    """Attach the current request id (when inside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = g.get("request_id")
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at emit time (test capture, gunicorn redirects)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always follow sys.stderr


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Point the root logger at stderr in the chosen format (idempotent)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_sardag", False)), None)
    if handler is None:
        handler = StderrHandler()
        handler._sardag = True  # type: ignore[attr-defined]
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    text = "%(asctime)s %(levelname)s %(name)s %(message)s"
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text))
    root.setLevel(level)


def get_logger(name: str) -> logging.Logger:
    """Return a named logger (configured by `init_app`)."""
    return logging.getLogger(name)


def init_app(app: Flask) -> None:
    """Configure logging and add request-id handling and access logging to `app`."""
    configure_logging(app.config.get("LOG_LEVEL", "INFO"), app.config.get("LOG_FORMAT", "json"))
    app.extensions["sardag_logger"] = logging.getLogger(f"{app.config['SERVICE_NAME']}.access")
    app.before_request(_start_request)
    app.after_request(_finish_request)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return g.get("request_id") if has_request_context() else None


def new_request_id() -> str:
    """A random 128-bit id as 32 hex digits.

    Not uuid4: os.urandom releases the GIL, and under a threaded worker re-acquiring it
    costs up to a switch interval per request. The id needs uniqueness, not secrecy;
    `random` is reseeded in every forked worker.
    """
    return f"{random.getrandbits(128):032x}"


def _start_request() -> None:
    state = g._get_current_object()  # one context lookup instead of one per attribute
    given = request.headers.get(REQUEST_ID_HEADER, "")
    state.request_id = given if _VALID_REQUEST_ID.match(given) else new_request_id()
    state.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    from flask import current_app

    state = g._get_current_object()
    response.headers[REQUEST_ID_HEADER] = state.get("request_id", "")
    access_log: logging.Logger = current_app.extensions["sardag_logger"]
    if not access_log.isEnabledFor(logging.INFO):
        return response
    elapsed_ms = (time.perf_counter() - state.get("request_started", time.perf_counter())) * 1000
    req = request._get_current_object()
    access_log.info(
        "request",
        extra={
            "method": req.method,
            "path": req.path,
            "status": response.status_code,
            "duration_ms": round(elapsed_ms, 2),
            "remote_addr": req.remote_addr,
        },
    )
    return response
