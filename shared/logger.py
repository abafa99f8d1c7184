"""Structured logging: JSON (or text) lines, and one access line per request with a request id."""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import re
import sys
import threading
import time
from queue import Empty, SimpleQueue
from typing import Any, TextIO

from flask import Flask, Request, Response, g, has_request_context

from shared import tracing
from shared.request_pipeline import RequestState, elapsed_seconds, get_pipeline
from shared.secrets import EXTENSION as SECRETS_EXTENSION
from shared.secrets import Secrets, secret_values

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_Entry = tuple[float, str, str, str, dict[str, Any]]  # created, level, logger, message, extra
_ENCODER = json.JSONEncoder(default=str)  # built once: json.dumps(default=...) builds one per call


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The attributes a caller added to `record` (`extra=`, the request id), in their order."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object; extra attributes become fields; secrets masked."""

    def __init__(self, secrets: Secrets | None = None) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last whole second and its text
        self.secrets = secrets if secrets is not None else Secrets()

    def format(self, record: logging.LogRecord) -> str:
        extra = extra_fields(record)
        if record.exc_info:
            extra["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), extra)

    def line(self, created: float, level: str, logger: str, message: str, extra: dict[str, Any]) -> str:
        """The JSON line of one entry: the fixed fields, then `extra` in its order."""
        entry: dict[str, Any] = {
            "time": self._utc_millis(created),
            "level": level,
            "logger": logger,
            "message": message,
        }
        entry.update(extra)
        return self.secrets.mask(_ENCODER.encode(entry))

    def _utc_millis(self, created: float) -> str:
        """ISO 8601 UTC with milliseconds; the date part is computed once per second.

        Rounded as `datetime.fromtimestamp` rounds (to the microsecond, then truncated).
        """
        fraction, whole = math.modf(created)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            whole, micros = whole + 1, micros - 1_000_000
        second = int(whole)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{cached[1]}.{micros // 1000:03d}+00:00"


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger> <message> key=value ...`: the JSON line's fields, for the eye.

    Secrets are masked, as in the JSON format, and control characters (a request path's
    terminal escapes, a newline that would forge a line) are written as `\\xNN`.
    """

    def __init__(self, secrets: Secrets | None = None) -> None:
        super().__init__()
        self.secrets = secrets if secrets is not None else Secrets()

    def format(self, record: logging.LogRecord) -> str:
        """The line (and the traceback, if any), with every secret replaced by `***`."""
        head = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        fields = " ".join(f"{key}={_text_value(value)}" for key, value in extra_fields(record).items())
        line = _escape_controls(f"{head} {fields}" if fields else head)
        if record.exc_info:  # a traceback keeps its line breaks, nothing else
            line = f"{line}\n{_escape_controls(self.formatException(record.exc_info), keep=NEWLINE)}"
        return self.secrets.mask(line)


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NEWLINE = "\n"


def _escape_controls(text: str, keep: str = "") -> str:
    """`text` with every C0/C1 control character (but those in `keep`) written as `\\xNN`."""
    return _CONTROLS.sub(lambda m: m[0] if m[0] in keep else f"\\x{ord(m[0]):02x}", text)


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else _ENCODER.encode(value)
    plain = text and not any(c.isspace() or c in '"=' for c in text)
    return text if plain else _ENCODER.encode(text)


def make_formatter(fmt: str, secrets: Secrets | None = None) -> logging.Formatter:
    """The formatter of LOG_FORMAT `fmt` (`json` or `text`), masking `secrets`."""
    return JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets)


class RequestIdFilter(logging.Filter):
    """Attach the current request id (when inside a request), and trace ids, to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__ and has_request_context():
            record.request_id = g.get("request_id")
        if tracing.enabled() and "trace_id" not in record.__dict__:
            add_trace_ids(record.__dict__)
        return True


def add_trace_ids(fields: dict[str, Any]) -> None:
    """Add `trace_id` and `span_id` of the current span (tracing on, inside a span)."""
    ids = tracing.current_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at emit time (test capture, gunicorn redirects)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always follow sys.stderr


class BackgroundStderrHandler(logging.Handler):
    """Formats in the logging thread; one writer thread writes the lines to stderr in batches.

    For threaded servers: a write to stderr releases the GIL and, under StreamHandler, holds
    the handler lock meanwhile, so every request thread that logs queues behind it. Here a
    request thread only formats and appends to a queue; the writer wakes at most every
    `interval` seconds and writes whatever has accumulated in one call. A line is lost only
    if the process dies without running `close()` (gunicorn's worker exit and interpreter
    exit both run it), or when stderr stops taking lines: past `max_queued` waiting lines
    new ones are dropped and counted, and the count is written once stderr moves again.
    """

    def __init__(self, interval: float = 0.05, max_queued: int = 100_000) -> None:
        super().__init__()
        self.interval = interval
        self.max_queued = max_queued
        self.dropped = 0
        self._lines: SimpleQueue[str | _Entry | None] = SimpleQueue()
        self._writer = threading.Thread(target=self._write_forever, name="log-writer", daemon=True)
        self._writer.start()

    def createLock(self) -> None:
        # emit() only formats and enqueues (SimpleQueue is thread-safe): no lock, so a
        # thread preempted while formatting never makes the others wait.
        self.lock = None

    def emit(self, record: logging.LogRecord) -> None:
        """Format `record` now (request context is here) and queue the line."""
        try:
            self._queue(self.format(record))
        except Exception:
            self.handleError(record)

    def put_entry(self, created: float, logger: str, message: str, extra: dict[str, Any]) -> None:
        """Queue an INFO entry that the writer formats (the access log's short cut past logging)."""
        self._queue((created, "INFO", logger, message, extra))

    def _queue(self, item: str | _Entry) -> None:
        if self._lines.qsize() < self.max_queued:
            self._lines.put(item)
        else:
            self.dropped += 1  # not exact under races; it only has to say lines were lost

    def close(self) -> None:
        """Write every queued line, then stop the writer (idempotent)."""
        if self._writer.is_alive():
            self._lines.put(None)
            self._writer.join(timeout=5)
        super().close()

    def _write_forever(self) -> None:
        while True:
            batch = [self._lines.get()]
            if batch[0] is not None:
                time.sleep(self.interval)  # let lines accumulate: one write for many
            batch += _drain(self._lines)
            lines = [line for item in batch if item is not None and (line := self._text(item))]
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                warning = f"{dropped} log lines dropped: stderr did not keep up"
                lines.append(self._text((time.time(), "WARNING", __name__, warning, {})))
            if lines:
                self._write("\n".join(lines) + "\n")
            if None in batch:
                return

    def _text(self, item: str | _Entry) -> str:
        if isinstance(item, str):
            return item
        created, level, logger, message, extra = item
        try:
            formatter = self.formatter
            assert isinstance(formatter, JsonFormatter), "entries are queued in JSON mode only"
            return formatter.line(created, level, logger, message, extra)
        except Exception:  # one bad entry must not stop the writer: report it, go on
            self.handleError(logging.makeLogRecord({"name": logger, "msg": message}))
            return ""

    def _write(self, text: str) -> None:
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "could not write log lines to stderr"}))


def _drain(lines: SimpleQueue[str | _Entry | None]) -> list[str | _Entry | None]:
    found = []
    while True:
        try:
            found.append(lines.get_nowait())
        except Empty:
            return found


def configure_logging(level: str = "INFO", fmt: str = "json", *, background: bool = False) -> None:
    """Point the root logger at stderr in the chosen format (idempotent).

    `background=True` (gunicorn workers) writes from a separate thread in batches; a
    handler installed that way stays when later calls (the app factory's) leave it out.
    """
    secrets = log_secrets()
    handler = _our_handler()
    if handler is None or (background and not isinstance(handler, BackgroundStderrHandler)):
        handler = _install(BackgroundStderrHandler() if background else StderrHandler())
    handler.setFormatter(make_formatter(fmt, secrets))
    logging.getLogger().setLevel(level)


def log_secrets() -> Secrets:
    """The secrets the process's log lines are masked with (one set, kept across reconfiguring)."""
    handler = _our_handler()
    found = getattr(handler.formatter, "secrets", None) if handler is not None else None
    return found if isinstance(found, Secrets) else Secrets()


def stop_background_logging() -> None:
    """Write out the queued lines and log synchronously from now on (gunicorn worker exit)."""
    handler = _our_handler()
    if isinstance(handler, BackgroundStderrHandler):
        _install(StderrHandler()).setFormatter(handler.formatter)
        handler.close()


def is_ours(handler: logging.Handler) -> bool:
    """True for the stderr handler `configure_logging` installs (either kind)."""
    return isinstance(handler, StderrHandler | BackgroundStderrHandler)


def _our_handler() -> logging.Handler | None:
    return next((h for h in logging.getLogger().handlers if is_ours(h)), None)


def _install(handler: logging.Handler) -> logging.Handler:
    """Make `handler` the root logger's stderr handler, replacing the previous one."""
    root = logging.getLogger()
    previous = _our_handler()
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    if previous is not None:
        root.removeHandler(previous)
    return handler


def get_logger(name: str) -> logging.Logger:
    """Return a named logger (configured by `init_app`)."""
    return logging.getLogger(name)


def init_app(app: Flask) -> None:
    """Configure logging and add request-id handling and access logging to `app`."""
    configure_logging(app.config.get("LOG_LEVEL", "INFO"), app.config.get("LOG_FORMAT", "json"))
    secrets = log_secrets()
    secrets.add(secret_values(app.config))
    app.extensions[SECRETS_EXTENSION] = secrets
    access_log = logging.getLogger(f"{app.config['SERVICE_NAME']}.access")
    app.extensions["sardag_logger"] = access_log
    get_pipeline(app).add(before=_assign_request_id, after=functools.partial(_finish_request, access_log))


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


def _assign_request_id(req: Request, state: RequestState) -> None:
    given = req.environ.get("HTTP_X_REQUEST_ID", "")
    state.request_id = given if _VALID_REQUEST_ID.match(given) else new_request_id()


def _finish_request(access_log: logging.Logger, req: Request, state: RequestState, response: Response) -> None:
    request_id = getattr(state, "request_id", "")
    response.headers.add(REQUEST_ID_HEADER, request_id)
    if not access_log.isEnabledFor(logging.INFO):
        return
    seconds = elapsed_seconds(state)
    fields = {
        "method": req.method,
        "path": req.path,
        "status": response.status_code,
        "duration_ms": None if seconds is None else round(seconds * 1000, 2),
        "remote_addr": req.remote_addr,
        "request_id": request_id,
    }
    if tracing.enabled():
        add_trace_ids(fields)
    handler = _sole_background_handler(access_log)
    if handler is not None:
        handler.put_entry(time.time(), access_log.name, "request", fields)
        return
    # makeRecord + handle: what Logger.info does, minus the caller lookup (no use here)
    record = access_log.makeRecord(
        access_log.name, logging.INFO, __file__, 0, "request", (), None, extra=fields
    )
    access_log.handle(record)


def _sole_background_handler(log: logging.Logger) -> BackgroundStderrHandler | None:
    """The handler an INFO record of `log` would reach alone, if it is ours in JSON; else None.

    Then the access line can be formatted and queued directly: the same line for a third of
    the cost of a LogRecord, its filters and handlers. Any other handler (a test's capture,
    a text format) or filter on the way sends the line through logging as usual.
    """
    current: logging.Logger | None = log
    while current is not None and not current.handlers:
        if current.filters or not current.propagate:
            return None
        current = current.parent
    if current is None or current.filters or len(current.handlers) != 1 or current.parent is not None:
        return None
    handler = current.handlers[0]
    if not isinstance(handler, BackgroundStderrHandler) or not isinstance(handler.formatter, JsonFormatter):
        return None
    only_ours = all(isinstance(f, RequestIdFilter) for f in handler.filters)
    return handler if only_ours and handler.level <= logging.INFO else None
