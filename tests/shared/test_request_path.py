"""The per-request path of the shared base: background log writing, the access line, and
request counts that reach Prometheus without a scrape."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from sardag_testing import wait_until

from shared import logger
from shared.metrics import FLUSH_SECONDS, get_metrics

pytestmark = [pytest.mark.unit]


@pytest.fixture
def background_logging() -> Iterator[None]:
    """Log through the background writer (as in a gunicorn worker), then back to direct."""
    logger.configure_logging("INFO", "json", background=True)
    yield
    logger.stop_background_logging()
    logging.getLogger().setLevel("WARNING")


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_background_writer_keeps_every_line_and_each_threads_order(
    background_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("test.background")

    def burst(thread: int) -> None:
        for n in range(500):
            log.warning("line", extra={"thread_no": thread, "n": n})

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logger.stop_background_logging()  # writes out what is queued
    lines = [e for e in _json_lines(capsys.readouterr().err) if e.get("message") == "line"]
    assert len(lines) == 8 * 500
    for t in range(8):
        assert [e["n"] for e in lines if e["thread_no"] == t] == list(range(500))


def test_after_stopping_the_writer_lines_are_written_at_once(
    background_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logger.stop_background_logging()
    logging.getLogger("test.after").warning("straight out")
    assert "straight out" in capsys.readouterr().err  # no writer thread left to wait for


def _access_line(app: Flask, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    app.test_client().get("/plain?x=1", headers={"X-Request-ID": "same-id"})
    logger.stop_background_logging()
    entries = [e for e in _json_lines(capsys.readouterr().err) if e.get("message") == "request"]
    assert len(entries) == 1
    return entries[0]


def _only_our_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide pytest's capture handlers from the root logger, as in a real worker."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [h for h in root.handlers if logger.is_ours(h)])


def test_access_line_short_cut_writes_what_logging_writes(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(REDIS_URL=None, LOG_LEVEL="INFO")
    through_logging = _access_line(app, capsys)  # direct handler: the usual logging path
    logger.configure_logging("INFO", "json", background=True)
    _only_our_handler(monkeypatch)
    access_log = app.extensions["sardag_logger"]
    assert logger._sole_background_handler(access_log) is not None  # the short cut is taken
    short_cut = _access_line(app, capsys)  # sole background handler: queued as an entry
    assert list(short_cut) == list(through_logging)  # same fields, same order
    for entry in (short_cut, through_logging):
        entry.pop("time"), entry.pop("duration_ms")
    assert short_cut == through_logging
    assert short_cut["request_id"] == "same-id"
    assert (short_cut["path"], short_cut["status"], short_cut["logger"]) == (
        "/plain",
        200,
        "support-app.access",
    )
    logging.getLogger().setLevel("WARNING")


def test_access_records_still_reach_other_handlers(
    make_app: Callable[..., Flask], background_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(REDIS_URL=None, LOG_LEVEL="INFO")
    logger.configure_logging("INFO", "json", background=True)
    with caplog.at_level(logging.INFO, logger="support-app.access"):
        app.test_client().get("/plain", headers={"X-Request-ID": "seen-by-caplog"})
    records = [r for r in caplog.records if r.name == "support-app.access"]
    assert [getattr(r, "request_id", None) for r in records] == ["seen-by-caplog"]
    assert records[0].status == 200  # type: ignore[attr-defined]


def quick_flusher(app: Flask) -> None:
    """The flusher thread (started by the first request) flushes every 50 ms, not every FLUSH_SECONDS."""
    get_metrics(app).tally._interval = 0.05


@pytest.mark.parametrize(
    "created", [0.0, 1_700_000_000.0, 1_700_000_000.25, 1_795_507_535.856, 1_795_507_599.9994]
)
def test_json_time_is_iso_utc_with_milliseconds(created: float) -> None:
    record = logging.makeLogRecord({"msg": "t", "created": created, "levelname": "INFO", "name": "t"})
    line = json.loads(logger.JsonFormatter().format(record))
    assert line["time"] == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


def test_request_counts_reach_prometheus_without_a_scrape(memory_app: Flask) -> None:
    quick_flusher(memory_app)
    client = memory_app.test_client()
    for _ in range(3):
        client.get("/plain")
    registry = get_metrics(memory_app).registry
    labels = {"method": "GET", "rule": "/plain", "service": "support-app", "status": "200"}
    wait_until(
        lambda: registry.get_sample_value("sardag_http_requests_total", labels) == 3.0,
        10 * FLUSH_SECONDS,
        "3 requests in the registry",
    )
    latency = {k: v for k, v in labels.items() if k != "status"}
    assert registry.get_sample_value("sardag_http_request_duration_seconds_count", latency) == 3.0


def test_rejected_requests_are_counted_and_logged_like_any_other(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(REDIS_URL=None, LOG_LEVEL="INFO")
    client = app.test_client()
    statuses = [client.get("/limited").status_code for _ in range(51)]
    too_big = client.post("/write", data=b"x" * (1024 * 1024 + 1), headers={"X-Request-ID": "big-one"})
    assert (statuses[-1], too_big.status_code) == (429, 413)
    assert too_big.headers["X-Request-ID"] == "big-one"
    entries = [e for e in _json_lines(capsys.readouterr().err) if e.get("message") == "request"]
    assert [e["status"] for e in entries] == [200] * 50 + [429, 413]
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rule="/limited",service="support-app",status="429"} 1.0' in text
    assert 'rule="/write",service="support-app",status="413"} 1.0' in text
    logging.getLogger().setLevel("WARNING")


def test_when_stderr_stops_taking_lines_they_are_dropped_and_counted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = logger.BackgroundStderrHandler(interval=0.01, max_queued=10)
    handler.setFormatter(logger.JsonFormatter())
    blocked = threading.Event()
    release = threading.Event()
    real_write = handler._write

    def stuck_then_real(text: str) -> None:
        blocked.set()
        release.wait(5)
        real_write(text)

    handler._write = stuck_then_real  # type: ignore[method-assign]
    record = logging.makeLogRecord({"msg": "first", "levelname": "INFO", "name": "t"})
    handler.emit(record)
    assert blocked.wait(5)  # the writer holds "first" and is stuck in the write
    for n in range(25):
        handler.emit(logging.makeLogRecord({"msg": f"m{n}", "levelname": "INFO", "name": "t"}))
    release.set()
    handler.close()
    entries = _json_lines(capsys.readouterr().err)
    messages = [e["message"] for e in entries]
    assert messages[:11] == ["first"] + [f"m{n}" for n in range(10)]  # the queue held ten
    assert {"level": "WARNING", "message": "15 log lines dropped: stderr did not keep up"}.items() <= entries[
        -1
    ].items()


def test_an_entry_that_cannot_be_formatted_does_not_stop_the_writer(capsys: pytest.CaptureFixture[str]) -> None:
    handler = logger.BackgroundStderrHandler(interval=0.01)
    handler.setFormatter(logger.JsonFormatter())
    circular: dict[str, object] = {}
    circular["self"] = circular  # json cannot encode it
    handler.put_entry(time.time(), "t", "broken", {"loop": circular})
    handler.put_entry(time.time(), "t", "fine", {"n": 1})
    handler.close()
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err  # reported the standard logging way
    assert [e["message"] for e in _json_lines(err)] == ["fine"]


def test_the_metrics_flusher_survives_a_failing_flush(
    memory_app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    quick_flusher(memory_app)
    metrics = get_metrics(memory_app)
    real_observe = metrics.observe_request
    failures = iter([OSError("metrics directory gone")])

    def observe_once_failing(*args: object) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        real_observe(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics, "observe_request", observe_once_failing)
    client = memory_app.test_client()
    client.get("/plain")  # its count is lost with the failing flush
    labels = {"method": "GET", "rule": "/plain", "service": "support-app", "status": "200"}
    logged = "could not record request metrics"
    wait_until(lambda: logged in caplog.text, 10 * FLUSH_SECONDS, "the logged failure")
    client.get("/plain")
    wait_until(
        lambda: metrics.registry.get_sample_value("sardag_http_requests_total", labels) == 1.0,
        10 * FLUSH_SECONDS,
        "the next request recorded by the same thread",
    )
