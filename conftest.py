"""Fixtures every test folder shares: client/runner of its `app`, and the real servers.

Integration tests talk to real servers. When one is absent the test is skipped with the
reason, except under CI=true, where an absent server fails the run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sardag_testing import free_port, in_ci, require_server
from sardag_testing.markers import check_kinds, install_server_guard, report_slow_unmarked

__all__ = ["free_port", "in_ci", "require_server"]

# Each pytest process (every xdist worker too) imports the services and the test modules,
# compiling them and rewriting the tests' asserts: about 1.3 s of CPU a process when no
# bytecode may be written (PYTHONDONTWRITEBYTECODE=1). Cache it in the virtualenv instead,
# never beside the sources. An explicit PYTHONPYCACHEPREFIX is kept; outside a virtualenv,
# nothing changes.
if sys.dont_write_bytecode and sys.pycache_prefix is None and sys.prefix != sys.base_prefix:
    sys.pycache_prefix = str(Path(sys.prefix) / "pycache")
    sys.dont_write_bytecode = False

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the `app` fixture each test folder defines (flaskr style)."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A CLI runner of the `app` fixture each test folder defines."""
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the real PostgreSQL server (TEST_DATABASE_URL), checked reachable."""
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=3).close()
    except Exception as exc:
        require_server("PostgreSQL", f"{urlsplit(url).netloc}: {exc}".strip())
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the real Redis server (TEST_REDIS_URL), checked reachable."""
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:
        require_server("Redis", f"{urlsplit(url).netloc}: {exc}")
    return url


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[str]:
    """The Redis URL with its (test-only) database flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()
    client.close()


@pytest.hookimpl(trylast=True)  # after each folder's conftest added the marks it derives
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test is exactly one of unit or integration, and a unit test asks for no server."""
    check_kinds(items)


def pytest_configure(config: pytest.Config) -> None:
    """Under SARDAG_UNIT_GUARD=1 (the CI's unit step) a test reaching for a server fails."""
    if os.environ.get("SARDAG_UNIT_GUARD") == "1" and not _xdist_controller(config):
        install_server_guard()


def _xdist_controller(config: pytest.Config) -> bool:
    """True in the process that starts pytest-xdist's workers (`-n`): it runs no test, and
    the workers it starts (where the tests run, each with the guard) are processes."""
    return bool(getattr(config.option, "tx", None)) and not hasattr(config, "workerinput")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the tests that took over a second without the `slow` mark."""
    report_slow_unmarked(terminalreporter)
