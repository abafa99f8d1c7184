"""Each secret setting, set to a recognisable value, appears in no log line (a start, failing
connections, careless code logging its configuration), /health or /readyz, Sentry event (as
its transport is handed it) or config command output, of either service: the one masking
policy, shared/secrets.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sentry_sdk
from flask import Flask
from sardag_testing import free_port, wait_until
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from shared.config import main as config_command
from shared.lifecycle import shutdown
from shared.sentry_integration import scrub_event

pytestmark = [pytest.mark.integration, pytest.mark.api]  # the app dials closed loopback ports

KEY, KEYS, FILE_KEY = "apikey-AAAA-0123456789", "apikeys-BBBB-0123456789", "filekey-CCCC-0123456789"
DB_PW, DB_QUERY_PW, READ_PW = "dbpw-DDDD/0123", "dbqpw-EEEE 0123", "readpw-HHHH/0123"
REDIS_PW, REDIS_QUERY_PW = "rdpw-FFFF/0123", "rdqpw-GGGG+0123"
SENTRY_KEY = "sentrykey0123456789abcdef0000"
FEED_PW, OTEL_PW = "feedpw-JJJJ/0123", "otelpw-KKKK/0123"  # a proxy's, a collector's basic auth
OTEL_TOKEN, OTEL_TRACES_TOKEN = "Bearer oteltoken-LLLL0123", "tracestoken-MMMM0123"  # a collector's headers
SECRETS = (
    KEY,
    KEYS,
    FILE_KEY,
    DB_PW,
    DB_QUERY_PW,
    READ_PW,
    REDIS_PW,
    REDIS_QUERY_PW,
    SENTRY_KEY,
    FEED_PW,
    OTEL_PW,
    OTEL_TOKEN,
    OTEL_TRACES_TOKEN,
)
SERVICES = ("database-service", "websocket-streaming")


def settings(service: str, tmp_path: Path) -> dict[str, str]:
    """Every secret setting `service` reads, each pointing at a closed port where it dials."""
    keys = tmp_path / "keys"
    keys.write_text(f"# keys\n{FILE_KEY}\n")
    common = {
        "API_KEY": KEY,
        "API_KEYS": KEYS,
        "API_KEYS_FILE": str(keys),
        "REDIS_URL": f"redis://:{quote(REDIS_PW, safe='')}@127.0.0.1:{free_port()}/0"
        f"?password={quote(REDIS_QUERY_PW)}",
        "SENTRY_DSN": f"http://{SENTRY_KEY}@127.0.0.1:{free_port()}/42",
    }
    if service == "database-service":
        return {
            **common,
            "DATABASE_URL": f"postgresql://app:{quote(DB_PW, safe='')}@127.0.0.1:{free_port()}/sardag"
            f"?password={quote(DB_QUERY_PW, safe='')}&connect_timeout=1",
            "DATABASE_READ_URL": f"postgresql://reader:{quote(READ_PW, safe='')}@127.0.0.1:{free_port()}/sardag"
            "?connect_timeout=1",
        }
    feed = f"feed:{quote(FEED_PW, safe='')}@127.0.0.1:{free_port()}"
    return {**common, "BINANCE_WS_URL": f"ws://{feed}", "BINANCE_REST_URL": f"http://{feed}"}


def tracing_settings() -> dict[str, str]:
    """The collector URLs and headers (only the config command reads them: tracing is process-wide)."""
    collector = f"http://otel:{quote(OTEL_PW, safe='')}@127.0.0.1:{free_port()}"
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector}/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": f"authorization={quote(OTEL_TOKEN)},x-team=desk",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"x-token={OTEL_TRACES_TOKEN}",
    }


def leaked(text: str) -> list[str]:
    """The secrets found in `text`, in any form they could take (as written, encoded)."""
    forms = {s for secret in SECRETS for s in (secret, quote(secret, safe=""), quote(secret))}
    return sorted(form for form in forms if form in text)


class Recording(Transport):
    """Sentry's transport stand-in: keeps each envelope's item payloads as they would be sent."""

    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[str] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        # the envelope's header names the DSN by design (it is the address): only its items
        self.payloads += [item.get_bytes().decode("utf-8", "replace") for item in envelope.items]


@pytest.fixture
def sentry_transport() -> Iterator[Callable[[], Recording]]:
    """Hook a recording transport into the Sentry client an app started; reset Sentry after."""

    def hook() -> Recording:
        client = sentry_sdk.get_client()
        assert client.is_active(), "the app did not start Sentry"
        recording = client.transport = Recording()
        return recording

    yield hook
    sentry_sdk.get_client().close()
    sentry_sdk.init()


def _create(service: str, config: dict[str, Any]) -> Flask:
    if service == "database-service":
        from database_service import create_app
    else:
        from websocket_streaming import create_app
    return create_app(config)


def _ingest(app: Flask, service: str) -> Callable[[], None]:
    """Start what the service dials on its own (the Binance feed); wait for its first failure."""
    if service != "websocket-streaming":
        return lambda: None
    from websocket_streaming import start_ingest, stop_ingest

    start_ingest(app)
    client = app.test_client()
    upstream = lambda: client.get("/health").get_json()["checks"]["upstream"]["detail"]  # noqa: E731
    wait_until(lambda: upstream().get("last_error") is not None, 20, "a failed feed connection")
    return lambda: stop_ingest(app)


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize(
    "service",
    ["database-service", pytest.param("websocket-streaming", marks=pytest.mark.slow)],  # waits for the feed
)
def test_no_secret_in_logs_health_or_sentry(
    service: str,
    log_format: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sentry_transport: Callable[[], Recording],
) -> None:
    config = {"TESTING": True, "LOG_LEVEL": "INFO", "LOG_FORMAT": log_format, **settings(service, tmp_path)}
    app = _create(service, config)

    @app.get("/boom")
    def boom() -> None:
        configured = dict(app.config)  # a stack local Sentry sends
        raise RuntimeError(f"careless: {json.dumps(configured, default=str)}")

    sent = sentry_transport()
    stop = _ingest(app, service)
    try:
        client = app.test_client()
        client.post("/signals/save", json={"symbol": "BTCUSDT", "action": "BUY", "price": 1})  # no key: 401
        client.post("/signals/save", json={"symbol": "BTCUSDT"}, headers={"X-API-Key": FILE_KEY})
        client.get(f"/no/such/{KEY}/{DB_PW}")  # a path with secrets in the access log
        answers = [client.get(path).get_data(as_text=True) for path in ("/health", "/readyz")]
        assert client.get("/boom").status_code == 500
        with app.app_context():  # careless code logging a whole configuration
            logging.getLogger(service).error("settings: %s", dict(app.config))
        sentry_sdk.flush(timeout=5)
        event = scrub_event({"extra": {"config": dict(app.config)}}, secrets=app.extensions["sardag_secrets"])
    finally:
        stop()
        shutdown(app)
    logs = capsys.readouterr().err
    assert "settings:" in logs  # the lines were written...
    assert leaked(logs) == []  # ...with every secret masked
    for answer in answers:
        assert leaked(answer) == []
    assert any("RuntimeError" in payload for payload in sent.payloads)  # the transport got the event...
    assert any('"breadcrumbs"' in payload for payload in sent.payloads)  # ...and the log lines before it
    assert leaked("\n".join(sent.payloads)) == []
    assert leaked(json.dumps(event, default=str)) == []


@pytest.mark.parametrize("service", SERVICES)
def test_no_secret_in_the_config_command_output(
    service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {**settings(service, tmp_path), **tracing_settings()}.items():
        monkeypatch.setenv(name, value)
    config_command([service])  # returns (no SystemExit) when the configuration is valid
    out = capsys.readouterr()
    assert "REDIS_URL=redis://:***@127.0.0.1" in out.out
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:***@127.0.0.1" in out.out
    assert "OTEL_EXPORTER_OTLP_HEADERS=***" in out.out
    assert "password=***" in out.out
    assert leaked(out.out + out.err) == []
