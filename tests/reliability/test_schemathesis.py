"""schemathesis against both services' OpenAPI documents, run the way users run them.

The schemathesis CLI (every phase: examples, coverage, fuzzing, stateful; every check,
including negative-data rejection, positive-data acceptance and ignored auth) against each
service under gunicorn with its own gunicorn.conf.py, started by `Launcher` on a free port.
Why the CLI and gunicorn rather than the WSGI app in-process: the CLI's coverage and
stateful phases are what found the boundary cases (5e-324, duplicated parameters,
over-long request lines), and gunicorn is what answers some of them (414) in production.

Rate limits are raised to 1,000,000 a minute for these runs (RATE_LIMIT_DEFAULT and the
per-route RATE_LIMIT_* variables), so the generated requests meet the limiter on every route
without turning into 429s.

The short form runs in CI; the long form (at least 2,000 requests per service) runs with
RELIABILITY_LONG=1:
    RELIABILITY_LONG=1 TEST_REDIS_URL=... .venv/bin/python -m pytest -s tests/reliability/test_schemathesis.py
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from sardag_testing import json_strings, python_in_message, scratch_postgres, wait_until
from sardag_testing.processes import VENV_BIN, Launcher, Running, http

pytestmark = [pytest.mark.integration, pytest.mark.api, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
LONG = os.environ.get("RELIABILITY_LONG") == "1"
LONG_MIN_REQUESTS = 2000
RAISED = "1000000"
RAISED_LIMITS = {
    f"RATE_LIMIT_{name}": RAISED
    for name in (
        "DEFAULT",
        "SIGNALS_SAVE",
        "SIGNALS_HISTORY",
        "PERFORMANCE_TRACK",
        "PERFORMANCE_TRADES",
        "PRICE",
        "STREAM",
        "CANDLES",
    )
}
KEYS = ("st-key-0123456789abcdef", "st-key-fedcba9876543210")
CONFIG = (
    "request-timeout = 10\n"
    # schemathesis' own list plus 414: gunicorn refuses a request line over 4094 bytes (many
    # repeated parameters) before the app sees it (docs/api-conformance.md, "Deliberate deviations")
    "[checks.negative_data_rejection]\n"
    'expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", '
    '"429", "5xx"]\n'
)
# /stream never ends by itself: read two events, then judge what arrived.
STREAM_CONFIG = '[[operations]]\ninclude-path = "/stream"\nmax-stream-events = 2\n'


@dataclass
class Outcome:
    """One schemathesis run: its exit code, its output and every exchange of its HAR report."""

    code: int
    output: str
    entries: list[dict[str, Any]]

    @property
    def statuses(self) -> Counter[int]:
        """How many responses had each status."""
        return Counter(int(e["response"]["status"]) for e in self.entries)

    def summary(self, name: str) -> str:
        """One line with the figures the report asks for."""
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        return (
            f"schemathesis {name}: {len(self.entries)} requests, {server_errors} 5xx, "
            f"exit {self.code}, statuses {dict(sorted(self.statuses.items()))}"
        )


def run_schemathesis(service: Running, tmp: Path, max_examples: int, *headers: str) -> Outcome:
    """Run the CLI against `service`'s /openapi.json with every check; keep a HAR of it all."""
    config, har = tmp / "schemathesis.toml", tmp / "schemathesis.har.json"
    config.write_text(CONFIG + (STREAM_CONFIG if service.name.startswith("websocket") else ""))
    argv = [str(VENV_BIN / "schemathesis"), "--config-file", str(config), "run"]
    argv += [f"{service.url}/openapi.json", "--checks", "all", "--max-examples", str(max_examples)]
    # One worker: two threads in hypothesis' lambda descriptions can trip CPython 3.11.7's
    # "AST constructor recursion depth mismatch" (ast.parse is not thread-safe there).
    argv += ["--workers", "1", "--report", "har", "--report-har-path", str(har)]
    for header in headers:
        argv += ["--header", header]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": str(HERE), "NO_COLOR": "1"}
    # cwd: the CLI keeps a .schemathesis cache in its working directory
    done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True, timeout=1800, check=False)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    return Outcome(done.returncode, done.stdout + done.stderr, entries)


def check(outcome: Outcome, service: Running, name: str, min_requests: int) -> None:
    """Zero failures of any check, zero 5xx, enough requests; errors in the JSON shape."""
    print(outcome.summary(name))
    tail = outcome.output[-6000:]
    assert outcome.code == 0, f"schemathesis found problems:\n{tail}\n--- service log ---\n{service.log_tail()}"
    assert not [s for s in outcome.statuses if s >= 500], outcome.summary(name)
    # every operation carries an example: the examples phase runs instead of being skipped
    assert "Examples (in" in outcome.output, tail
    assert "⏭  Examples" not in outcome.output, tail
    assert len(outcome.entries) >= min_requests, outcome.summary(name)
    for entry in outcome.entries:
        status, content = int(entry["response"]["status"]), entry["response"]["content"]
        if status >= 400 and status != 414:  # 414 is gunicorn's own HTML (a documented deviation)
            assert content["mimeType"].startswith("application/json"), entry["request"]["url"]
            assert {"error", "message"} <= set(json.loads(content.get("text") or "{}")), entry["request"]["url"]
            # messages read like the documentation: no repr, pydantic phrase, type name or regex
            text = content.get("text") or ""
            assert python_in_message(text, client_words(entry)) == [], (entry["request"]["url"], text)


def client_words(entry: dict[str, Any]) -> list[str]:
    """What the client sent (query names and values, body strings): an answer may quote it."""
    request = entry["request"]
    words = [part[key] for part in request.get("queryString", []) for key in ("name", "value")]
    query = parse_qsl(urlsplit(request["url"]).query, keep_blank_values=True)
    words += [word for pair in query for word in pair]
    posted = (request.get("postData") or {}).get("text") or ""
    try:
        words += list(json_strings(json.loads(posted)))
    except ValueError:
        words.append(posted)
    return words


def _examples(long: int, short: int) -> int:
    return long if LONG else short


@pytest.fixture
def launcher(tmp_path: Path) -> Any:
    with Launcher(tmp_path) as launch:
        yield launch


def test_database_service_with_api_keys(launcher: Launcher, tmp_path: Path) -> None:
    """SQLite, two API keys: the key schemes are declared and a missing key must get 401."""
    service = launcher.gunicorn("database-service", workers=2, API_KEYS=",".join(KEYS), **RAISED_LIMITS)
    assert "securitySchemes" in http("GET", f"{service.url}/openapi.json")[1]["components"]
    outcome = run_schemathesis(service, tmp_path, _examples(300, 8), f"X-API-Key: {KEYS[1]}")
    check(outcome, service, "database-service (sqlite, API keys)", LONG_MIN_REQUESTS if LONG else 100)
    assert outcome.statuses[201] > 0  # writes with the key went through
    assert outcome.statuses[401] > 0  # and writes without it were refused


def test_database_service_without_api_key(launcher: Launcher, tmp_path: Path) -> None:
    """No key configured: the document declares no security, so nothing expects a 401."""
    service = launcher.gunicorn("database-service", workers=1, **RAISED_LIMITS)
    assert "securitySchemes" not in http("GET", f"{service.url}/openapi.json")[1]["components"]
    outcome = run_schemathesis(service, tmp_path, 8)
    check(outcome, service, "database-service (sqlite, no key)", 100)
    assert outcome.statuses[401] == 0


def test_database_service_on_postgresql(launcher: Launcher, tmp_path: Path, postgres_url: str) -> None:
    """The same document against PostgreSQL storage (NUMERIC prices, text without NUL)."""
    with scratch_postgres(postgres_url, "sardag_st") as url:
        service = launcher.gunicorn("database-service", workers=1, DATABASE_URL=url, **RAISED_LIMITS)
        outcome = run_schemathesis(service, tmp_path, _examples(200, 8))
        service.stop(timeout=15)
    check(outcome, service, "database-service (postgresql)", LONG_MIN_REQUESTS if LONG else 100)


def test_websocket_streaming(launcher: Launcher, tmp_path: Path) -> None:
    """Every route of websocket-streaming, fed by the fake exchange, /stream included."""
    fake = launcher.fake_exchange("--rate", "5")
    service = launcher.gunicorn(
        "websocket-streaming",
        workers=1,
        BINANCE_WS_URL=f"ws://127.0.0.1:{fake.port}",
        BINANCE_REST_URL=f"http://127.0.0.1:{fake.port}",
        **RAISED_LIMITS,
    )
    wait_until(lambda: http("GET", f"{service.url}/price/BTCUSDT")[0] == 200, 30, "a first price")
    outcome = run_schemathesis(service, tmp_path, _examples(300, 10))
    check(outcome, service, "websocket-streaming", LONG_MIN_REQUESTS if LONG else 100)
    assert outcome.statuses[200] > 0
