"""Each secret setting, set to a recognisable value, appears in no log line, /health, Sentry
event or config command output (the one masking policy: shared/secrets.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

import pytest
import sentry_sdk
from database_service import create_app
from sardag_testing import free_port

from shared.config import main as config_command
from shared.lifecycle import shutdown
from shared.sentry_integration import scrub_event

pytestmark = [pytest.mark.integration, pytest.mark.api]  # the app dials closed loopback ports

KEY, KEYS, FILE_KEY = "apikey-AAAA-0123456789", "apikeys-BBBB-0123456789", "filekey-CCCC-0123456789"
DB_PW, DB_QUERY_PW = "dbpw-DDDD/0123", "dbqpw-EEEE 0123"
REDIS_PW, REDIS_QUERY_PW = "rdpw-FFFF/0123", "rdqpw-GGGG+0123"
SENTRY_KEY = "sentrykey0123456789abcdef0000"
SECRETS = (KEY, KEYS, FILE_KEY, DB_PW, DB_QUERY_PW, REDIS_PW, REDIS_QUERY_PW, SENTRY_KEY)


def settings(tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "keys"
    keys.write_text(f"# keys\n{FILE_KEY}\n")
    db, redis = free_port(), free_port()  # nothing listens: connection errors get logged
    return {
        "API_KEY": KEY,
        "API_KEYS": KEYS,
        "API_KEYS_FILE": str(keys),
        "DATABASE_URL": f"postgresql://app:{quote(DB_PW, safe='')}@127.0.0.1:{db}/sardag"
        f"?password={quote(DB_QUERY_PW, safe='')}&connect_timeout=1",
        "REDIS_URL": f"redis://:{quote(REDIS_PW, safe='')}@127.0.0.1:{redis}/0"
        f"?password={quote(REDIS_QUERY_PW)}",
        "SENTRY_DSN": f"http://{SENTRY_KEY}@127.0.0.1:{free_port()}/42",
    }


def leaked(text: str) -> list[str]:
    """The secrets found in `text`, in any form they could take (as written, encoded)."""
    forms = {s for secret in SECRETS for s in (secret, quote(secret, safe=""), quote(secret))}
    return sorted(form for form in forms if form in text)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_secret_in_logs_health_or_sentry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    app = create_app({"TESTING": True, "LOG_LEVEL": "INFO", "LOG_FORMAT": log_format, **settings(tmp_path)})
    try:
        client = app.test_client()
        client.post("/signals/save", json={"symbol": "BTCUSDT", "action": "BUY", "price": 1})  # no key: 401
        client.post("/signals/save", json={"symbol": "BTCUSDT"}, headers={"X-API-Key": FILE_KEY})  # db down
        client.get(f"/no/such/{KEY}/{DB_PW}")  # a path with secrets in the access log
        health = client.get("/health")
        with app.app_context():  # careless code logging a whole configuration
            logging.getLogger("database_service").warning("settings: %s", dict(app.config))
        event = scrub_event(
            {
                "message": json.dumps(dict(app.config), default=str),
                "extra": {"url": app.config["DATABASE_URL"]},
            },
            secrets=app.extensions["sardag_secrets"],
        )
    finally:
        shutdown(app)
        sentry_sdk.get_client().close()
        sentry_sdk.init()
    logs = capsys.readouterr().err
    assert "settings:" in logs  # the lines were written...
    assert leaked(logs) == []  # ...with every secret masked
    assert leaked(json.dumps(health.get_json())) == []
    assert leaked(json.dumps(event)) == []


def test_no_secret_in_the_config_command_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in settings(tmp_path).items():
        monkeypatch.setenv(name, value)
    config_command(["database-service"])  # returns (no SystemExit) when the configuration is valid
    out = capsys.readouterr()
    assert "DATABASE_URL=postgresql://app:***@127.0.0.1" in out.out
    assert "password=***" in out.out
    assert leaked(out.out + out.err) == []
