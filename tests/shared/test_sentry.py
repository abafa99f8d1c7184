"""Sentry: a no-op without a DSN, a warning for a bad one, credentials never sent."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sentry_sdk
from flask import Flask
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from shared.sentry_integration import ANNOUNCED_ENV, announce, capture_exception, init_sentry, scrub_event


class RecordingTransport(Transport):
    """Keeps the envelopes Sentry would have sent."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


@pytest.fixture
def sentry_off() -> Iterator[None]:
    """Leave the process with Sentry switched off after the test."""
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.init()


@pytest.mark.unit
def test_no_dsn_is_a_logged_no_op(caplog: pytest.LogCaptureFixture, sentry_off: None) -> None:
    with caplog.at_level(logging.INFO, logger="shared.sentry"):
        assert init_sentry("svc", dsn="") is False
    assert "no SENTRY_DSN" in caplog.text


@pytest.mark.unit
def test_malformed_dsn_warns_and_the_app_runs(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, sentry_off: None
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.sentry"):
        app = make_app(REDIS_URL=None, SENTRY_DSN="definitely not a dsn")
    assert "invalid SENTRY_DSN" in caplog.text
    assert "definitely" not in caplog.text  # the DSN itself is a secret
    assert app.test_client().get("/health").status_code == 200


@pytest.mark.parametrize(
    ("dsn", "level", "said"),
    [
        ("", logging.INFO, "sentry disabled: no SENTRY_DSN"),
        ("definitely not a dsn", logging.WARNING, "sentry disabled: invalid SENTRY_DSN (BadDsn)"),
        ("https://key@o1.ingest.example.invalid/42", logging.INFO, "sentry enabled for svc"),
    ],
)
@pytest.mark.unit
def test_the_master_announces_once_and_its_workers_stay_quiet(
    dsn: str,
    level: int,
    said: str,
    make_app: Callable[..., Flask],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    sentry_off: None,
) -> None:
    monkeypatch.setenv(ANNOUNCED_ENV, "")  # restored after the test
    with caplog.at_level(logging.INFO, logger="shared.sentry"):
        announce("svc", dsn)  # gunicorn's on_starting, in the master
        make_app(REDIS_URL=None, SENTRY_DSN=dsn)  # a worker, twice
        make_app(REDIS_URL=None, SENTRY_DSN=dsn)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(level, said)]


@pytest.mark.unit
def test_credentials_are_scrubbed_from_events(make_app: Callable[..., Flask], sentry_off: None) -> None:
    app = make_app(REDIS_URL=None)
    transport = RecordingTransport()
    assert init_sentry("svc", dsn="https://public@sentry.invalid/1", transport=transport) is True
    headers = {"X-API-Key": "key-123-secret", "Authorization": "Bearer tok-456-secret"}
    assert app.test_client().get("/boom", headers=headers).status_code == 500
    sentry_sdk.flush()
    events = [item.payload.json for env in transport.envelopes for item in env.items if item.type == "event"]
    assert len(events) == 1
    text = json.dumps(events[0])
    assert "kaboom" in text  # the error was reported
    assert "key-123-secret" not in text
    assert "tok-456-secret" not in text


@pytest.mark.unit
def test_scrub_event_handles_header_lists_and_cookies() -> None:
    event = {"request": {"headers": [["x-api-key", "a"], ["Accept", "b"]], "cookies": "session=1"}}
    scrubbed = scrub_event(event)
    assert scrubbed["request"]["headers"] == [["x-api-key", "[Filtered]"], ["Accept", "b"]]
    assert scrubbed["request"]["cookies"] == "[Filtered]"
    assert scrub_event({"message": "no request"}) == {"message": "no request"}


@pytest.mark.unit
def test_capture_exception_with_context(sentry_off: None) -> None:
    transport = RecordingTransport()
    init_sentry("svc", dsn="https://public@sentry.invalid/1", transport=transport)
    assert capture_exception(ValueError("bad frame"), {"stream": "btcusdt@trade"}) is not None
    sentry_sdk.flush()
    text = json.dumps([i.payload.json for e in transport.envelopes for i in e.items if i.type == "event"])
    assert "bad frame" in text
    assert "btcusdt@trade" in text


@pytest.mark.integration
@pytest.mark.slow
def test_self_check_command_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.sentry_integration"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "X-API-Key and Authorization scrubbed: ok" in result.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_rate_limiter_self_check_command_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.rate_limiter"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "55 hits on a 50/min key -> 50 allowed, 5 rejected: ok" in result.stdout
