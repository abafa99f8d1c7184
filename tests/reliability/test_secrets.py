"""Secrets never leave the process: not in a log line, a body, /health, /stats or a Sentry event.

Both services run under gunicorn with every secret set to a real value: API_KEY and
API_KEYS, a DATABASE_URL whose password reaches PostgreSQL (and one whose server is not
there), a REDIS_URL with the password of a private redis-server started with requirepass,
and a SENTRY_DSN pointing at a capture endpoint in this test. The test drives them through
successes and errors, stops them (so every log line is written and every event sent), and
greps everything captured for each secret, as written and percent-decoded.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
import sentry_sdk
from flask import Flask
from sardag_testing import free_port, scratch_postgres, wait_until
from sardag_testing.processes import Launcher, Running, http
from sardag_testing.servers import PrivateRedis

from shared.app import shutdown

pytestmark = [pytest.mark.integration, pytest.mark.api, pytest.mark.slow]

API_KEY = "ak-live-5c1d9e7f3a2b4d6e8f0a"
ROTATED_KEYS = ("ak-next-0b9a8c7d6e5f4a3b2c1d", "ak-old-9f8e7d6c5b4a39281706")
DB_PASSWORD = "pg-pw/7Qx@41:zz"  # characters that a URL must percent-encode
REDIS_PASSWORD = "rd-pw-2Jk8Lm4Np6Qr"
SENTRY_KEY = "f00dfacecafe4b1d8e2a3c5d7e9f0a1b"
SECRETS = (API_KEY, *ROTATED_KEYS, DB_PASSWORD, quote(DB_PASSWORD, safe=""), REDIS_PASSWORD, SENTRY_KEY)


class SentryCapture:
    """A local Sentry ingestion endpoint: keeps every event item it is sent."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                capture.items.extend(_envelope_payloads(_decoded(raw, self.headers.get("Content-Encoding"))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def dsn(self) -> str:
        """A DSN whose key is SENTRY_KEY and whose host is this endpoint."""
        return f"http://{SENTRY_KEY}@127.0.0.1:{self.port}/42"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def _decoded(raw: bytes, encoding: str | None) -> bytes:
    """An envelope's bytes as sentry-sdk sent them: gzip, or brotli when the module is
    importable (it is here: locust brings it), or plain."""
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "br":
        import brotli

        return bytes(brotli.decompress(raw))
    return raw


def _envelope_payloads(raw: bytes) -> list[bytes]:
    """The item payloads of an envelope (the envelope header names the DSN by design: not an event)."""
    lines = raw.split(b"\n")
    payloads, i = [], 1
    while i + 1 < len(lines):
        payloads.append(lines[i + 1])
        i += 2
    return payloads


@pytest.fixture
def sentry_capture() -> Iterator[SentryCapture]:
    capture = SentryCapture()
    yield capture
    capture.close()


@pytest.fixture
def locked_redis() -> Iterator[PrivateRedis]:
    """A private redis-server that requires REDIS_PASSWORD."""
    with PrivateRedis() as server:
        redis.Redis(port=server.port).config_set("requirepass", REDIS_PASSWORD)
        yield server


def _env(capture: SentryCapture, redis_port: int, database_url: str) -> dict[str, str]:
    return {
        "API_KEY": API_KEY,
        "API_KEYS": ",".join(ROTATED_KEYS),
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
        "SENTRY_DSN": capture.dsn,
        "LOG_LEVEL": "DEBUG",  # the most a log could say
        "REDIS_TIMEOUT_SECONDS": "1",
    }


def _with_password(url: str, port: int | None = None) -> str:
    """`url` with user postgres and DB_PASSWORD (trust auth ignores it), optionally another port."""
    rest = url.split("@", 1)[-1].split("://", 1)[-1]
    host, _, path = rest.partition("/")
    host = f"127.0.0.1:{port}" if port else host
    return f"postgresql://postgres:{quote(DB_PASSWORD, safe='')}@{host}/{path}"


class Recorder:
    """Sends requests and keeps every status, header and body for the grep."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def call(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> int:
        status, answer = http(method, url, body, timeout=20, headers=headers)
        self.seen.append(f"{method} {url} -> {status} {json.dumps(answer)}")
        return status


def _drive_database_service(service: Running, calls: Recorder, writes_work: bool) -> None:
    base = service.url
    good = {"symbol": "BTCUSDT", "action": "BUY", "price": 1.5}
    for path in ("/health", "/stats", "/openapi.json", "/metrics", "/signals/history", "/performance/stats"):
        calls.call("GET", base + path)
    created = calls.call("POST", f"{base}/signals/save", good, {"X-API-Key": API_KEY})
    assert created == (201 if writes_work else 503)
    rotated = calls.call("POST", f"{base}/signals/save", good, {"Authorization": f"Bearer {ROTATED_KEYS[0]}"})
    assert rotated == (201 if writes_work else 503)
    assert calls.call("POST", f"{base}/signals/save", good, {"X-API-Key": "wrong-key-123456"}) == 401
    assert calls.call("POST", f"{base}/signals/save", {"price": -1}, {"X-API-Key": API_KEY}) == 400
    calls.call("POST", f"{base}/performance/track", {"symbol": "X"}, {"X-API-Key": API_KEY})
    calls.call("GET", f"{base}/signals/history?since=yesterday")
    calls.call("GET", f"{base}/no/such/route")


def _drive_websocket_streaming(service: Running, calls: Recorder) -> None:
    for path in ("/health", "/stats", "/openapi.json", "/metrics", "/symbols", "/prices"):
        calls.call("GET", service.url + path)
    for symbol in ("BTCUSDT", "btcusdt", "DOGEUSDT", "BTC-USDT"):
        calls.call("GET", f"{service.url}/price/{symbol}")
    calls.call("GET", f"{service.url}/stream?symbols=BTCUSDT&symbols=ETHUSDT")


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_no_secret_leaves_either_service(
    tmp_path: Path,
    postgres_url: str,
    locked_redis: PrivateRedis,
    sentry_capture: SentryCapture,
) -> None:
    calls = Recorder()
    with Launcher(tmp_path) as launch, scratch_postgres(postgres_url, "sardag_secrets") as db_url:
        env = _env(sentry_capture, locked_redis.port, _with_password(db_url))
        fake = launch.fake_exchange("--rate", "5")
        services = [
            launch.gunicorn("database-service", workers=2, **env),
            launch.gunicorn(
                "database-service",
                workers=1,
                wait=False,
                **{**env, "DATABASE_URL": _with_password(db_url, free_port())},  # nothing listens there
            ),
            launch.gunicorn(
                "websocket-streaming",
                workers=2,
                **env,
                BINANCE_WS_URL=f"ws://127.0.0.1:{fake.port}",
                BINANCE_REST_URL=f"http://127.0.0.1:{free_port()}",  # backfill fails: an error to report
            ),
        ]
        launch.wait_healthy(services[1], statuses=(503,))
        _drive_database_service(services[0], calls, writes_work=True)
        _drive_database_service(services[1], calls, writes_work=False)
        wait_until(lambda: http("GET", f"{services[2].url}/price/BTCUSDT")[0] == 200, 30, "a first price")
        _drive_websocket_streaming(services[2], calls)
        for service in services:
            service.stop()
        logs = {service.name: service.log_text() for service in services}
    events = [item.decode("utf-8", "replace") for item in sentry_capture.items]

    assert any(len(text.splitlines()) > 10 for text in logs.values())  # the services did log
    assert any('"exception"' in event or '"logentry"' in event for event in events), "no Sentry event"
    for name, text in logs.items():
        assert not _leaks(text), f"{name} log has {_leaks(text)}"
    for line in calls.seen:
        assert not _leaks(line), line
    for event in events:
        assert not _leaks(event), f"Sentry event has {_leaks(event)}: {event[:500]}"


@pytest.fixture
def sentry_off() -> Iterator[None]:
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.init()


def test_an_unhandled_exception_reports_no_secret(
    postgres_url: str, sentry_capture: SentryCapture, sentry_off: None, capfd: pytest.CaptureFixture[str]
) -> None:
    """A view that fails with every configured secret in its message and its local variables."""
    from database_service import create_app

    with scratch_postgres(postgres_url, "sardag_boom") as db_url:
        database_url = _with_password(db_url)
        redis_url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"  # unreachable: in-process fallback
        config = {"API_KEY": API_KEY, "API_KEYS": ROTATED_KEYS, "SENTRY_DSN": sentry_capture.dsn}
        app: Flask = create_app({**config, "DATABASE_URL": database_url, "REDIS_URL": redis_url})

        @app.get("/boom")
        def boom() -> None:
            key, connection = API_KEY, database_url
            raise RuntimeError(f"cannot use {connection} or {redis_url} with {key} ({ROTATED_KEYS})")

        response = app.test_client().get("/boom")
        shutdown(app)
    sentry_sdk.flush(timeout=10)
    wait_until(lambda: sentry_capture.items, 10, "the Sentry event")
    body = response.get_data(as_text=True)
    logged = capfd.readouterr().err
    assert response.status_code == 500
    assert response.get_json()["error"] == "internal_error"
    assert "RuntimeError" in logged  # the log says what failed...
    assert not _leaks(logged), _leaks(logged)  # ...without the secrets
    assert not _leaks(body)
    event = b"\n".join(sentry_capture.items).decode()
    assert "RuntimeError" in event
    assert '"vars"' in event  # stack locals were sent, masked
    assert not _leaks(event), _leaks(event)
