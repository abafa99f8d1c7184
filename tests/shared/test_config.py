"""The typed configuration loader, each service's own settings, and `python -m shared.config`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import pytest
from database_service.settings import DatabaseConfig
from sardag_testing.processes import Launcher, Running, http
from websocket_streaming.settings import StreamingConfig

from shared.config import (
    SERVICES,
    SHARED_SETTINGS,
    ConfigError,
    Setting,
    SharedConfig,
    load_config,
    lookalike_warnings,
    main,
    parse_int,
    service_settings,
)
from shared.secrets import redacted, secret_values

ROOT = Path(__file__).resolve().parents[2]
# Free-text settings: no value is wrong for them.
ACCEPTS_ANY = {"REDIS_KEY_PREFIX"}
NOT_A_VALUE = "not-a-value"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No .env (cwd is empty) and no setting of any service in the environment."""
    monkeypatch.chdir(tmp_path)
    names = {s.name for s in SHARED_SETTINGS} | {s.name for n in SERVICES for s in service_settings(n).settings}
    for name in names | {"ALLOW_UNAUTHENTICATED"}:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _check(service: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`python -m shared.config <service>` in-process: (exit code, stdout, stderr)."""
    try:
        main([service])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.unit
def test_shared_defaults_match_the_design() -> None:
    config = load_config("svc", environ={}, env_file=None)
    assert config["REDIS_URL"] is None
    assert config["BIND"] == "127.0.0.1"
    assert config["TRUSTED_PROXIES"] == 0
    assert config["RATE_LIMIT_DEFAULT"] == 60
    assert config["RATE_LIMIT_ENABLED"] is True
    assert config["LOG_FORMAT"] == "json"
    assert config["SERVICE_NAME"] == "svc"


@pytest.mark.unit
def test_each_service_declares_its_own_settings() -> None:
    database = service_settings("database-service")
    streaming = service_settings("websocket-streaming")
    shared = {s.name for s in SHARED_SETTINGS}
    assert {"DATABASE_URL", "DATABASE_POOL_SIZE"} <= {s.name for s in database.settings}
    assert {"SYMBOLS", "BINANCE_WS_URL", "BINANCE_REST_URL", "PRICE_STALE_SECONDS"} <= {
        s.name for s in streaming.settings
    }
    assert not shared & {"DATABASE_URL", "SYMBOLS", "BINANCE_WS_URL", "BINANCE_REST_URL", "PRICE_STALE_SECONDS"}
    config = load_config(
        "db", settings=database.settings, defaults=database.defaults, environ={}, env_file=None
    )
    assert (config["PORT"], config["DATABASE_URL"]) == (5020, "sqlite:///data/sardag.db")
    config = load_config(
        "ws", settings=streaming.settings, defaults=streaming.defaults, environ={}, env_file=None
    )
    assert config["PORT"] == 5021
    assert config["SYMBOLS"] == ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT")
    assert config["PRICE_STALE_SECONDS"] == 10.0


@pytest.mark.unit
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


@pytest.mark.unit
def test_service_settings_and_defaults() -> None:
    extra = [Setting("WS_MAX_AGE", parse_int(1), 86_000)]
    config = load_config("svc", settings=extra, defaults={"PORT": 5021}, environ={}, env_file=None)
    assert config["PORT"] == 5021
    assert config["WS_MAX_AGE"] == 86_000


@pytest.mark.unit
@pytest.mark.parametrize(
    ("service", "typed"), [("database-service", DatabaseConfig), ("websocket-streaming", StreamingConfig)]
)
def test_each_setting_has_one_typed_field_holding_its_value(service: str, typed: type[SharedConfig]) -> None:
    spec = service_settings(service)
    config = load_config(spec.name, settings=spec.settings, defaults=spec.defaults, environ={}, env_file=None)
    built = typed.from_config(config)
    assert {f.name.upper() for f in fields(built)} == set(config)  # a new setting needs its field
    assert {name: getattr(built, name.lower()) for name in config} == config


@pytest.mark.unit
def test_typed_fields_take_a_test_override_of_a_near_type() -> None:
    streaming = service_settings("websocket-streaming")
    overrides = {
        "SYMBOLS": ["BTCUSDT"],
        "WS_CONNECTIONS": "1",
        "PRICE_STALE_SECONDS": 5,
        "SSE_QUEUE_EVENTS": 64.0,
    }
    config = load_config("ws", overrides, settings=streaming.settings, environ={}, env_file=None)
    built = StreamingConfig.from_config(config)
    assert (built.symbols, built.ws_connections) == (("BTCUSDT",), 1)
    assert (built.price_stale_seconds, built.sse_queue_events) == (5.0, 64)
    assert type(built.price_stale_seconds) is float
    assert type(built.sse_queue_events) is int


@pytest.mark.unit
def test_the_typed_configuration_never_prints_its_secrets() -> None:
    key, password = "k-0123456789abcdef-secret", "pw-very-secret"
    overrides = {"API_KEY": key, "REDIS_URL": f"redis://:{password}@127.0.0.1:6379/0"}
    built = SharedConfig.from_config(load_config("svc", overrides, environ={}, env_file=None))
    assert built.api_key == key
    assert key not in repr(built)
    assert password not in repr(built)


@pytest.mark.unit
def test_symbols_are_normalised() -> None:
    streaming = service_settings("websocket-streaming")
    config = load_config(
        "ws", settings=streaming.settings, environ={"SYMBOLS": " btcusdt, ETHUSDT ,btcusdt"}, env_file=None
    )
    assert config["SYMBOLS"] == ("BTCUSDT", "ETHUSDT")


@pytest.mark.unit
def test_per_route_limits_from_environment() -> None:
    config = load_config("svc", environ={"RATE_LIMIT_SIGNALS_SAVE": "250"}, env_file=None)
    assert config["RATE_LIMITS"] == {"signals_save": 250}


@pytest.mark.unit
def test_non_loopback_bind_needs_an_api_key_or_explicit_opt_out() -> None:
    with pytest.raises(ConfigError, match="BIND"):
        load_config("svc", environ={"BIND": "0.0.0.0"}, env_file=None)
    assert load_config("svc", environ={"BIND": "0.0.0.0", "API_KEY": "k-0123456789abcdef"}, env_file=None)
    opt_out = {"BIND": "0.0.0.0", "ALLOW_UNAUTHENTICATED": "1"}
    assert load_config("svc", environ=opt_out, env_file=None)["ALLOW_UNAUTHENTICATED"] is True
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert load_config("svc", environ={"BIND": loopback}, env_file=None)["BIND"] == loopback


@pytest.mark.unit
def test_redaction_hides_secrets() -> None:
    config = load_config(
        "svc",
        {"DATABASE_URL": "postgresql://u:pw123@db:5432/x"},
        environ={
            "API_KEY": "topsecret-0123456789",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel:collect0r@otel.example:4318",
        },
        env_file=None,
    )
    safe = redacted(config)
    assert "topsecret-0123456789" not in str(safe)
    assert "pw123" not in str(safe)
    assert safe["DATABASE_URL"] == "postgresql://u:***@db:5432/x"
    assert safe["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://otel:***@otel.example:4318"
    assert "collect0r" in secret_values(config)  # masked in log lines too


SHARED_BAD_VALUES = [
    ("PORT", "abc", "must be an integer"),
    ("PORT", "70000", "at most 65535"),
    ("REDIS_URL", "http://localhost", "unknown URL scheme"),
    ("RATE_LIMIT_DEFAULT", "-5", "at least 1"),
    ("RATE_LIMIT_ENABLED", "maybe", "must be a boolean"),
    ("TRUSTED_PROXIES", "two", "must be an integer"),
    ("SENTRY_TRACES_SAMPLE_RATE", "2", "at most 1.0"),
    ("LOG_FORMAT", "xml", "must be one of"),
    ("LOG_LEVEL", "LOUD", "must be DEBUG"),
    ("RATE_LIMIT_SIGNALS_SAVE", "0", "at least 1"),
    ("BIND", "0.0.0.0", "without API_KEY"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "unknown URL scheme"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://", "needs a host"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "grpc://jaeger:4317", "unknown URL scheme"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "must be one of http/protobuf"),
    ("OTEL_TRACES_SAMPLER", "sometimes", "must be one of parentbased_always_on"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5", "at most 1.0"),
    ("OTEL_TRACES_SAMPLER_ARG", "ten", "must be a number"),
    ("OTEL_RESOURCE_ATTRIBUTES", "team", "must be key=value"),
    ("OTEL_RESOURCE_ATTRIBUTES", "=x", "must be key=value"),
    ("OTEL_SDK_DISABLED", "maybe", "must be a boolean"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "Bearer tok-0123", "must be key=value pairs"),
]
SERVICE_BAD_VALUES = [
    ("database-service", "DATABASE_URL", "mysql://root@db/x", "unknown URL scheme"),
    ("database-service", "DATABASE_URL", "sqlite://", "needs a file path"),
    ("database-service", "DATABASE_POOL_SIZE", "abc", "must be an integer"),
    ("websocket-streaming", "SYMBOLS", ",", "at least one symbol"),
    ("websocket-streaming", "SYMBOLS", "BTC-USDT", "invalid symbol 'BTC-USDT': 2-20 letters or digits"),
    ("websocket-streaming", "BINANCE_WS_URL", "https://x", "unknown URL scheme"),
    ("websocket-streaming", "PRICE_STALE_SECONDS", "nan", "finite"),
]


def _assert_one_line_exit_2(code: int, err: str, name: str, expected: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"configuration error: {name}: ")
    assert expected in lines[0]
    assert "Traceback" not in err


BAD_VALUES = [(s, *bad) for s in sorted(SERVICES) for bad in SHARED_BAD_VALUES] + SERVICE_BAD_VALUES


@pytest.mark.unit
@pytest.mark.parametrize(("service", "name", "value", "expected"), BAD_VALUES)
def test_a_bad_value_stops_the_services_that_read_it_with_one_line(
    service: str,
    name: str,
    value: str,
    expected: str,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clean_env.setenv(name, value)
    _assert_one_line_exit_2(*_check(service, capsys)[::2], name, expected)
    if (service, name, value, expected) in SERVICE_BAD_VALUES:  # the other service does not read it
        (other,) = set(SERVICES) - {service}
        code, out, err = _check(other, capsys)
        assert (code, err) == (0, ""), f"a bad {name} stopped {other}"
        assert out.splitlines()[-1].startswith(f"{other}: configuration valid")


def _every_service_setting() -> list[tuple[str, str]]:
    return [
        (n, s.name) for n in sorted(SERVICES) for s in service_settings(n).settings if s.name not in ACCEPTS_ANY
    ]


@pytest.mark.unit
@pytest.mark.parametrize(("service", "name"), _every_service_setting())
def test_every_service_setting_refuses_a_bad_value_with_one_line(
    service: str, name: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv(name, NOT_A_VALUE)
    code, _, err = _check(service, capsys)
    _assert_one_line_exit_2(code, err, name, "")


@pytest.mark.unit
@pytest.mark.parametrize(("service", "port"), [("database-service", 5020), ("websocket-streaming", 5021)])
def test_config_command_prints_the_real_port_and_a_verdict(
    service: str, port: int, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("API_KEY", "hunter2-0123456789abc")
    code, out, err = _check(service, capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert f"PORT={port}" in lines
    assert f"SERVICE_NAME={service}" in lines
    assert "API_KEY=***" in lines
    assert "hunter2-0123456789abc" not in out
    assert lines[-1] == f"{service}: configuration valid; it would listen on 127.0.0.1:{port}"


def _config_command(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "ALLOW_UNAUTHENTICATED", "PORT"}}
    return subprocess.run(
        [sys.executable, "-m", "shared.config", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.integration
@pytest.mark.slow
def test_config_command_names_its_services_and_refuses_others(tmp_path: Path) -> None:
    usage = _config_command("--help", cwd=tmp_path)
    assert usage.returncode == 0
    assert usage.stdout.startswith("usage: python -m shared.config")
    assert "database-service,websocket-streaming" in usage.stdout
    for wrong in (["nope"], []):
        refused = _config_command(*wrong, cwd=tmp_path)
        assert refused.returncode == 2, refused
        assert refused.stdout == ""
        assert "usage: python -m shared.config" in refused.stderr
    bad = _config_command("database-service", cwd=tmp_path, DATABASE_POOL_SIZE="abc")
    assert (bad.returncode, bad.stderr) == (
        2,
        "configuration error: DATABASE_POOL_SIZE: must be an integer, got 'abc'\n",
    )
    good = _config_command("websocket-streaming", cwd=tmp_path, PORT="6001")
    assert good.returncode == 0, good.stderr
    assert (
        good.stdout.splitlines()[-1]
        == "websocket-streaming: configuration valid; it would listen on 127.0.0.1:6001"
    )


@pytest.mark.integration
@pytest.mark.slow
def test_config_command_runs_the_checks_across_settings(tmp_path: Path) -> None:
    symbols = ",".join(f"S{i:03d}USDT" for i in range(600))  # x 3 default streams: past 1024 per connection
    refused = _config_command("websocket-streaming", cwd=tmp_path, SYMBOLS=symbols)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == "configuration error: SYMBOLS: 1800 streams; Binance allows 1024 per connection\n"
    fits = _config_command(
        "websocket-streaming", cwd=tmp_path, SYMBOLS=symbols[: 300 * 9 - 1], WS_STREAMS="aggTrade"
    )
    assert fits.returncode == 0, fits.stderr
    too_long = _config_command("websocket-streaming", cwd=tmp_path, SYMBOLS=symbols[: 300 * 9 - 1])
    assert (too_long.returncode, too_long.stdout) == (2, "")
    assert too_long.stderr.startswith("configuration error: SYMBOLS: combined-stream URL is ")
    assert too_long.stderr.endswith(" bytes; keep it under 8 KB\n")


@pytest.mark.integration
@pytest.mark.slow
def test_gunicorn_with_a_bad_value_exits_with_one_line(support_gunicorn: Callable[..., Running]) -> None:
    server = support_gunicorn(1, wait=False, PORT="not-a-port")
    assert server.process.wait(60) == 2
    assert server.log_text().strip() == "configuration error: PORT: must be an integer, got 'not-a-port'"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("service", "name", "value"),
    [("database-service", "DATABASE_POOL_SIZE", "abc"), ("websocket-streaming", "WS_RING_SIZE", "8")],
)
def test_each_service_under_gunicorn_refuses_its_own_bad_setting(
    service: str, name: str, value: str, tmp_path: Path
) -> None:
    with Launcher(tmp_path) as launch:
        server = launch.gunicorn(service, wait=False, **{name: value})
        assert server.process.wait(60) == 2
    lines = server.log_text().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"configuration error: {name}: ")


@pytest.mark.integration
@pytest.mark.slow
def test_a_bad_symbols_does_not_stop_database_service(tmp_path: Path) -> None:
    with Launcher(tmp_path) as launch:
        server = launch.gunicorn("database-service", workers=1, SYMBOLS="BTC-USD,,??")
        assert http("GET", f"{server.url}/health")[0] == 200


@pytest.mark.unit
@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("HOST", "BIND"),
        ("SARDAG_DATABASE_URL", "DATABASE_URL"),
        ("SARDAG_LOG_LEVL", "LOG_LEVEL"),
        ("RATE_LIMIT_SIGNAL_SAVE", "RATE_LIMIT_SIGNALS_SAVE"),
        ("RATE_LIMIT_PRICES", "RATE_LIMIT_PRICE"),
    ],
)
def test_a_lookalike_variable_gets_one_warning_naming_the_intended_one(
    variable: str, meant: str, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    warnings = lookalike_warnings({variable: "1", "PATH": "/bin"}, env_file=None)
    assert warnings == [f"configuration warning: {variable} is ignored (not a setting); did you mean {meant}?"]
    # and the config command says it, once, before its verdict
    clean_env.setenv(variable, "0.0.0.0" if variable == "HOST" else "5")
    code, out, err = _check("database-service", capsys)
    assert code == 0
    assert err.splitlines() == warnings
    assert out.splitlines()[-1] == "database-service: configuration valid; it would listen on 127.0.0.1:5020"


@pytest.mark.unit
def test_settings_scopes_of_either_service_and_our_own_sardag_variables_are_not_warned() -> None:
    environ = {
        "BIND": "127.0.0.1",
        "RATE_LIMIT_PRICE": "300",  # websocket-streaming's: one .env serves both services
        "RATE_LIMIT_SIGNALS_SAVE": "100",
        "RATE_LIMIT_ENABLED": "1",
        "SARDAG_RATE_LIMIT_HOST_STORE": "file:///tmp/x",  # set by the gunicorn master
        "SARDAG_LOG_DIR": "/tmp",  # the run scripts'
        "HOSTNAME": "box",
    }
    assert lookalike_warnings(environ, env_file=None) == []
