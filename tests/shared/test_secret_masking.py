"""Secret masking (shared.secrets) and the settings that guard it: URLs, API keys, text logs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from shared.config import ConfigError, load_config
from shared.health_check import get_health
from shared.logger import TextFormatter
from shared.secrets import mask_url, mask_url_secrets, redacted, secret_values, url_secrets

pytestmark = pytest.mark.unit
KEY = "k-0123456789abcdef"  # long enough


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@db:5432/sardag?password=Query-Pw%2F1&sslmode=require",
        "redis://db:6379/0?password=Query-Pw%2F1",
        "rediss://:Query-Pw%2F1@db:6379/0",
        "postgresql://app:Query-Pw%2F1@db:5432/sardag?sslmode=require&PassWord=Query-Pw%2F1",
    ],
)
def test_a_password_in_userinfo_or_query_is_masked_as_written_and_decoded(url: str) -> None:
    assert {"Query-Pw%2F1", "Query-Pw/1"} <= url_secrets(url)
    shown = mask_url(url)
    assert "Query-Pw" not in shown
    assert "***" in shown
    assert "db:" in shown  # only the secret goes
    assert "Query-Pw" not in mask_url_secrets(f"FATAL: bad password 'Query-Pw/1' for {url}", url)
    config = {"DATABASE_URL": url, "REDIS_URL": url, "API_KEYS": ()}
    assert "Query-Pw" not in str(redacted(config))
    assert {"Query-Pw%2F1", "Query-Pw/1"} <= secret_values(config)


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"API_KEY": "short-key"}, "API_KEY"),
        ({"API_KEYS": f"{KEY},tiny"}, "API_KEYS"),
    ],
)
def test_a_key_under_the_minimum_length_is_refused_naming_the_variable(
    environ: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("svc", environ=environ, env_file=None)
    assert caught.value.name == name
    assert "16 characters" in str(caught.value)
    assert "tiny" not in str(caught.value)
    assert "short-key" not in str(caught.value)  # the refusal never prints the key


@pytest.mark.parametrize("content", [None, "", "# only a comment\n\n", "directory", f"{KEY}\nshort\n"])
def test_a_missing_unreadable_empty_or_short_keyed_key_file_fails_the_config_check(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "keys"
    if content == "directory":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config("svc", environ={"API_KEYS_FILE": str(path)}, env_file=None)
    assert caught.value.name == "API_KEYS_FILE"
    path_ok = tmp_path / "good"
    path_ok.write_text(f"# keys\n{KEY}\n")
    assert load_config("svc", environ={"API_KEYS_FILE": str(path_ok)}, env_file=None)["API_KEYS_FILE"]


def test_text_logs_escape_terminal_control_characters() -> None:
    record = logging.LogRecord("access", logging.INFO, __file__, 1, "request %s", ("/x\x1b[2J\rforged",), None)
    record.path = "/price/\x1b]0;owned\x07\nINFO fake line"
    line = TextFormatter().format(record)
    assert "\x1b" not in line
    assert "\n" not in line
    assert "\r" not in line
    assert "\\x1b[2J" in line  # still readable: the escape's bytes, written as text


def test_health_and_readyz_mask_a_secret_a_check_reports(make_app: Callable[..., Flask]) -> None:
    app = make_app(REDIS_URL=None, API_KEY=KEY)
    leaky = ("degraded", {"last_error": f"refused with key {KEY}"})  # a check quoting a driver
    get_health(app).add_check("leaky", lambda: leaky, critical=False)
    get_health(app).add_readiness("leaky", lambda: leaky)
    client = app.test_client()
    for path in ("/health", "/readyz"):
        body = client.get(path).get_data(as_text=True)
        assert KEY not in body
        assert "refused with key ***" in body  # the check's detail is kept, its secret masked


def test_the_config_printout_masks_a_secret_wherever_it_appears() -> None:
    config = {
        "API_KEY": KEY,
        "SENTRY_ENVIRONMENT": f"prod-{KEY}",  # a secret pasted into a setting that is not one
        "BINANCE_WS_URL": "wss://feed:Proxy-Pw%2F1@proxy.example:9443",  # a proxy's basic auth
        "PORT": 5020,
    }
    safe = redacted(config)
    assert safe["API_KEY"] == "***"
    assert safe["SENTRY_ENVIRONMENT"] == "prod-***"
    assert safe["BINANCE_WS_URL"] == "wss://feed:***@proxy.example:9443"
    assert safe["PORT"] == 5020
    assert {"Proxy-Pw%2F1", "Proxy-Pw/1"} <= secret_values(config)
