"""`.env.example`, `ecosystem.config.js` and `scripts/install-tools.sh`, statically."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

# docs/design.md's configuration, plus what docker-compose needs.
DESIGN_VARIABLES = [
    "DATABASE_URL",
    "REDIS_URL",
    "API_KEY",
    "BIND",
    "PORT",
    "TRUSTED_PROXIES",
    "RATE_LIMIT_DEFAULT",
    "RATE_LIMIT_ENABLED",
    "SYMBOLS",
    "BINANCE_WS_URL",
    "BINANCE_REST_URL",
    "PRICE_STALE_SECONDS",
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "SENTRY_RELEASE",
    "SENTRY_TRACES_SAMPLE_RATE",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "ALLOW_UNAUTHENTICATED",
]
COMPOSE_VARIABLES = ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"]
SECRETS = ["API_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "SENTRY_DSN"]
ASSIGNMENT = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$")


def env_example(repo: Path) -> list[tuple[str, str, list[str], bool]]:
    """(name, value, comment lines of its block, active) per assignment, commented-out included."""
    lines = (repo / ".env.example").read_text().splitlines()
    entries = []
    for index, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if match:
            entries.append((match[1], match[2], _block_comments(lines, index), not line.startswith("#")))
    return entries


def _block_comments(lines: list[str], index: int) -> list[str]:
    """Prose comment lines of the non-blank block above `lines[index]` (shared by a group)."""
    comments = []
    for line in reversed(lines[:index]):
        if not line.strip():
            break
        if line.startswith("#") and not ASSIGNMENT.match(line):
            comments.append(line)
    return comments


@pytest.mark.unit
def test_env_example_has_every_variable_with_a_comment(ops: SimpleNamespace) -> None:
    entries = {name: comments for name, _, comments, _ in env_example(ops.REPO)}
    for name in DESIGN_VARIABLES + COMPOSE_VARIABLES:
        assert name in entries, f"{name} missing from .env.example"
        assert entries[name], f"{name} has no comment"


@pytest.mark.unit
def test_env_example_covers_every_setting(ops: SimpleNamespace) -> None:
    """Every Setting of shared/config.py and of both services appears in .env.example."""
    from database_service.settings import SETTINGS as DATABASE_SETTINGS
    from websocket_streaming.settings import SETTINGS as STREAMING_SETTINGS

    from shared.config import SHARED_SETTINGS

    settings = (*SHARED_SETTINGS, *DATABASE_SETTINGS, *STREAMING_SETTINGS)
    names = {name for name, _, _, _ in env_example(ops.REPO)}
    missing = sorted({s.name for s in settings} - names)
    assert not missing, f".env.example lacks {missing}"


@pytest.mark.unit
def test_env_example_holds_no_secret(ops: SimpleNamespace) -> None:
    values = {name: value for name, value, _, _ in env_example(ops.REPO)}
    for name in SECRETS:
        assert values[name] == "", f"{name} must be empty in .env.example"


@pytest.mark.unit
def test_env_example_values_parse(ops: SimpleNamespace) -> None:
    """The active values, and the commented-out examples too, load through shared.config."""
    from database_service.settings import SETTINGS as DATABASE_SETTINGS
    from websocket_streaming.settings import SETTINGS as STREAMING_SETTINGS

    from shared.config import load_config

    environ = {name: value for name, value, _, _ in env_example(ops.REPO)}
    settings = (*DATABASE_SETTINGS, *STREAMING_SETTINGS)
    config = load_config("ops-check", environ=environ, env_file=None, settings=settings)
    assert config["BIND"] == "127.0.0.1"
    assert config["API_KEY"] is None


@pytest.fixture(scope="module")
def ecosystem(ops: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return evaluate_ecosystem(ops, tmp_path_factory.mktemp("ecosystem"))


def evaluate_ecosystem(ops: SimpleNamespace, scratch: Path, **extra: str) -> dict[str, Any]:
    """ecosystem.config.js as `pm2 start` sees it, with `extra` in the caller's environment."""
    node = ops.find_tool("node")
    script = "console.log(JSON.stringify(require(process.argv[1])))"
    result = subprocess.run(
        [node, "-e", script, str(ops.REPO / "ecosystem.config.js")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SARDAG_RUN_DIR": str(scratch / "run"),
            "SARDAG_LOG_DIR": str(scratch / "logs"),
            **extra,
        },
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.integration
def test_ecosystem_runs_both_services_under_gunicorn(ecosystem: dict[str, Any], ops: SimpleNamespace) -> None:
    apps = {app["name"]: app for app in ecosystem["apps"]}
    assert set(apps) == set(ops.SERVICES)
    for name, app in apps.items():
        module = ops.SERVICES[name]["module"]
        assert app["script"] == str(ops.REPO / ".venv/bin/gunicorn")
        assert app["args"] == ["-c", f"{name}/gunicorn.conf.py", f"{module}:create_app()"]
        assert app["interpreter"] == "none"
        assert app["exec_mode"] == "fork"
        assert app["instances"] == 1
        assert app["cwd"] == str(ops.REPO)
        assert app["env"]["PORT"] == str(ops.SERVICES[name]["port"])
        assert int(app["env"]["WEB_CONCURRENCY"]) >= 1


@pytest.mark.integration
def test_ecosystem_feed_fake_adds_the_fake_exchange_and_feeds_streaming_from_it(
    ops: SimpleNamespace, tmp_path: Path
) -> None:
    apps = {
        app["name"]: app for app in evaluate_ecosystem(ops, tmp_path, FEED="fake", FAKE_PORT="9555")["apps"]
    }
    assert set(apps) == {*ops.SERVICES, "fake-exchange"}
    fake = apps["fake-exchange"]
    assert fake["script"] == str(ops.REPO / "scripts/fake-exchange.sh")  # what `make run-offline` runs
    assert fake["args"] == ["--port", "9555"]
    assert fake["env"]["SARDAG_VENV"] == str(ops.REPO / ".venv")
    streaming = apps["websocket-streaming"]["env"]
    assert (streaming["BINANCE_WS_URL"], streaming["BINANCE_REST_URL"]) == (
        "ws://127.0.0.1:9555",
        "http://127.0.0.1:9555",
    )
    assert "BINANCE_WS_URL" not in apps["database-service"]["env"]


@pytest.mark.integration
def test_ecosystem_restart_policy_logs_and_metrics(ecosystem: dict[str, Any]) -> None:
    metric_dirs = set()
    for app in ecosystem["apps"]:
        assert app["env"]["PYTHONUNBUFFERED"] == "1"
        metric_dirs.add(app["env"]["PROMETHEUS_MULTIPROC_DIR"])
        assert app["autorestart"] is True
        assert app["max_restarts"] > 0
        assert app["min_uptime"]
        assert app["kill_signal"] == "SIGTERM", "SIGINT is gunicorn's quick (non-graceful) shutdown"
        assert app["kill_timeout"] > 30000, "must exceed gunicorn's graceful_timeout"
        assert app["out_file"] != app["error_file"]
    assert len(metric_dirs) == 2, "each service needs its own metrics directory"


@pytest.mark.unit
def test_gunicorn_hook_wipes_the_metrics_directory(tmp_path: Path) -> None:
    from shared.gunicorn_hooks import reset_metrics_dir

    stale = tmp_path / "metrics" / "counter_123.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    reset_metrics_dir(str(stale.parent))
    assert stale.parent.is_dir()
    assert list(stale.parent.iterdir()) == []


@pytest.mark.integration
def test_install_tools_script_is_valid_bash(ops: SimpleNamespace) -> None:
    script = ops.REPO / "scripts/install-tools.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "apt-get install" in text
    assert "prometheus" in text
    assert "npm ci" in text
