"""The typed configuration loader: sources, precedence and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import ConfigError, Setting, load_config, parse_int, redacted

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_match_the_design() -> None:
    config = load_config("svc", environ={}, env_file=None)
    assert config["DATABASE_URL"] == "sqlite:///data/sardag.db"
    assert config["REDIS_URL"] is None
    assert config["BIND"] == "127.0.0.1"
    assert config["TRUSTED_PROXIES"] == 0
    assert config["RATE_LIMIT_DEFAULT"] == 60
    assert config["RATE_LIMIT_ENABLED"] is True
    assert config["SYMBOLS"] == ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
    assert config["PRICE_STALE_SECONDS"] == 10.0
    assert config["LOG_FORMAT"] == "json"
    assert config["SERVICE_NAME"] == "svc"


def test_precedence_env_file_then_environment_then_overrides(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=7001\nRATE_LIMIT_DEFAULT=7\nLOG_LEVEL=debug\n")
    config = load_config(
        "svc", {"RATE_LIMIT_DEFAULT": 9, "TESTING": True}, environ={"PORT": "7002"}, env_file=env_file
    )
    assert config["LOG_LEVEL"] == "DEBUG"  # from .env
    assert config["PORT"] == 7002  # environment beats .env
    assert config["RATE_LIMIT_DEFAULT"] == 9  # the mapping beats both
    assert config["TESTING"] is True  # unknown keys pass through


def test_service_settings_and_defaults() -> None:
    extra = [Setting("WS_MAX_AGE", parse_int(1), 86_000)]
    config = load_config("svc", settings=extra, defaults={"PORT": 5021}, environ={}, env_file=None)
    assert config["PORT"] == 5021
    assert config["WS_MAX_AGE"] == 86_000


def test_symbols_are_normalised() -> None:
    config = load_config("svc", environ={"SYMBOLS": " btcusdt, ETHUSDT ,btcusdt"}, env_file=None)
    assert config["SYMBOLS"] == ("BTCUSDT", "ETHUSDT")


def test_per_route_limits_from_environment() -> None:
    config = load_config("svc", environ={"RATE_LIMIT_SIGNALS_SAVE": "250"}, env_file=None)
    assert config["RATE_LIMITS"] == {"signals_save": 250}


def test_non_loopback_bind_needs_an_api_key_or_explicit_opt_out() -> None:
    with pytest.raises(ConfigError, match="BIND"):
        load_config("svc", environ={"BIND": "0.0.0.0"}, env_file=None)
    assert load_config("svc", environ={"BIND": "0.0.0.0", "API_KEY": "k"}, env_file=None)
    opt_out = {"BIND": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "1"}
    assert load_config("svc", environ=opt_out, env_file=None)["ALLOW_UNAUTHENTICATED"] is True
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert load_config("svc", environ={"BIND": loopback}, env_file=None)["BIND"] == loopback


def test_redaction_hides_secrets() -> None:
    config = load_config(
        "svc",
        environ={"API_KEY": "topsecret", "DATABASE_URL": "postgresql://u:pw123@db:5432/x"},
        env_file=None,
    )
    safe = redacted(config)
    assert "topsecret" not in str(safe)
    assert "pw123" not in str(safe)
    assert safe["DATABASE_URL"] == "postgresql://u:***@db:5432/x"


BAD_VALUES = [
    ("PORT", "abc", "must be an integer"),
    ("PORT", "70000", "at most 65535"),
    ("DATABASE_URL", "mysql://root@db/x", "unknown URL scheme"),
    ("REDIS_URL", "http://localhost", "unknown URL scheme"),
    ("RATE_LIMIT_DEFAULT", "-5", "at least 1"),
    ("RATE_LIMIT_ENABLED", "maybe", "must be a boolean"),
    ("TRUSTED_PROXIES", "two", "must be an integer"),
    ("PRICE_STALE_SECONDS", "nan", "finite"),
    ("SENTRY_TRACES_SAMPLE_RATE", "2", "at most 1.0"),
    ("LOG_FORMAT", "xml", "must be one of"),
    ("LOG_LEVEL", "LOUD", "must be DEBUG"),
    ("SYMBOLS", ",", "at least one symbol"),
    ("SYMBOLS", "BTC-USDT", "invalid symbol"),
    ("BINANCE_WS_URL", "https://x", "unknown URL scheme"),
    ("RATE_LIMIT_SIGNALS_SAVE", "0", "at least 1"),
    ("BIND", "0.0.0.0", "without API_KEY"),
]


@pytest.mark.parametrize(("name", "value", "expected"), BAD_VALUES)
def test_each_bad_value_is_one_clear_line_and_a_non_zero_exit(
    name: str, value: str, expected: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "ALLOW_UNAUTHENTICATED"}}
    result = subprocess.run(
        [sys.executable, "-m", "shared.config", "svc"],
        env={**env, name: value},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {name}: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_gunicorn_with_a_bad_value_exits_with_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "from shared.gunicorn_hooks import configure\nconfigure(globals(), 'svc', defaults={'PORT': 5999})\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "support_app:create_app()"],
        env={**os.environ, "PORT": "not-a-port"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "configuration error: PORT: must be an integer, got 'not-a-port'"


def test_a_valid_configuration_prints_redacted(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared.config", "svc"],
        env={**os.environ, "API_KEY": "hunter2", "PORT": "6001"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "PORT=6001" in result.stdout.splitlines()
    assert "hunter2" not in result.stdout
