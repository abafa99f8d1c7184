"""The shared gunicorn settings: a clean start, request, SIGTERM and exit, one log format."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from sardag_testing.processes import Running, http

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_start_serve_and_sigterm_leave_a_clean_log(support_gunicorn: Callable[..., Running]) -> None:
    server = support_gunicorn(3, LOG_LEVEL="INFO")
    for n in range(20):
        assert http("GET", f"{server.url}/plain", headers={"X-Request-ID": f"r-{n}"})[0] == 200
    assert server.stop() == 0
    log = server.log_text()
    assert "Logging error" not in log
    assert "Traceback" not in log
    lines = [json.loads(line) for line in log.splitlines()]  # every line is JSON, gunicorn's too
    # one JSON access line per request, written by the worker's log writer by the time it exits
    access = [e for e in lines if e["message"] == "request" and e.get("path") == "/plain"]
    assert sorted(e["request_id"] for e in access) == sorted(f"r-{n}" for n in range(20))
    assert any(e["message"] == "Shutting down: Master" for e in lines)
    assert any(e["logger"] == "gunicorn.error" and e["message"].startswith("Booting worker") for e in lines)
    # one line per service start, not one per worker (three here)
    assert [e["message"] for e in lines if e["logger"] == "shared.sentry"] == ["sentry disabled: no SENTRY_DSN"]


TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ .*")


def test_text_format_is_one_format_for_gunicorn_and_the_app(support_gunicorn: Callable[..., Running]) -> None:
    server = support_gunicorn(3, LOG_LEVEL="INFO", LOG_FORMAT="text")
    assert http("GET", f"{server.url}/plain", headers={"X-Request-ID": "t-1"})[0] == 200
    assert server.stop() == 0
    lines = server.log_text().splitlines()
    assert [line for line in lines if not TEXT_LINE.fullmatch(line)] == []
    assert any(" INFO gunicorn.error Starting gunicorn" in line for line in lines)
    access = [line for line in lines if " support-app.access request " in line and "path=/plain " in line]
    assert len(access) == 1
    assert all(f in access[0] for f in ("method=GET", "status=200", "duration_ms=", "request_id=t-1"))
    assert sum("sentry disabled: no SENTRY_DSN" in line for line in lines) == 1
