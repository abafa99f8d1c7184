"""The marker rules of the test suites, enforced at collection and in CI's unit-only run.

- Every test is exactly one of `unit` (nothing outside the test process) or `integration`.
- A `unit` test asks for no fixture that brings a server (PostgreSQL, Redis, gunicorn...).
- `slow` goes on every test over a second: the run names the ones that took longer unmarked.
- Under SARDAG_UNIT_GUARD=1 (CI's `-m unit` step) starting a process or connecting to
  PostgreSQL or Redis fails the test that tries.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

KINDS = ("unit", "integration")
SERVER_FIXTURES = frozenset(
    {
        "postgres_url",
        "redis_url",
        "clean_redis",
        "pg_database",
        "pg_empty",
        "fresh_postgres",
        "launcher",
        "support_gunicorn",
        "private_redis",
    }
)
SLOW_SECONDS = 1.0
SERVER_PORTS = {5432, 6379}  # PostgreSQL and Redis defaults; TEST_*_URL ports are added
# Tools, not servers: sentry-sdk asks git for the release; platform.processor() (each
# pytest-xdist worker's start) runs `uname -p`.
ALLOWED_PROGRAMS = frozenset({"git", "uname"})


def kind_problems(items: Iterable[pytest.Item]) -> list[str]:
    """One line per test that breaks the unit/integration rule."""
    problems = []
    for item in items:
        kinds = [kind for kind in KINDS if item.get_closest_marker(kind)]
        if len(kinds) != 1:
            problems.append(f"{item.nodeid}: marked {' and '.join(kinds) or 'neither unit nor integration'}")
        elif kinds == ["unit"] and (servers := SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))):
            problems.append(f"{item.nodeid}: marked unit but uses {', '.join(sorted(servers))}")
    return problems


def check_kinds(items: Iterable[pytest.Item]) -> None:
    """Stop the run (a usage error, like an unknown marker) when a test breaks the rule."""
    problems = kind_problems(items)
    if problems:
        raise pytest.UsageError("tests must be exactly one of unit or integration:\n  " + "\n  ".join(problems))


def report_slow_unmarked(reporter: Any, limit: float = SLOW_SECONDS) -> None:
    """Name the tests that took longer than `limit` seconds in all and lack the `slow` mark."""
    totals: dict[str, float] = {}
    slow_marked: set[str] = set()
    for reports in reporter.stats.values():
        for report in reports:
            if isinstance(report, pytest.TestReport):
                totals[report.nodeid] = totals.get(report.nodeid, 0.0) + report.duration
                if "slow" in report.keywords:
                    slow_marked.add(report.nodeid)
    unmarked = sorted((t, n) for n, t in totals.items() if t > limit and n not in slow_marked)
    if unmarked:
        reporter.write_sep("-", f"over {limit:g} s without the slow mark")
        for seconds, nodeid in reversed(unmarked):
            reporter.write_line(f"{seconds:6.2f}s {nodeid}")


def _blocked_ports() -> set[int]:
    ports = set(SERVER_PORTS)
    for name in ("TEST_DATABASE_URL", "TEST_REDIS_URL", "DATABASE_URL", "REDIS_URL"):
        port = urlsplit(os.environ.get(name, "")).port
        if port:
            ports.add(port)
    return ports


def install_server_guard() -> None:
    """Make every new process, and every connection to PostgreSQL or Redis, fail in this process."""
    blocked = _blocked_ports()
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2 and address[1] in blocked:
            raise ConnectionRefusedError(f"unit tests reach no server (port {address[1]})")
        real_connect(self, address)

    real_popen_init = subprocess.Popen.__init__

    def no_process(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        argv = args[0] if args else kwargs.get("args")
        program = Path(str(argv[0] if isinstance(argv, list | tuple) else argv).split()[0]).name
        if program not in ALLOWED_PROGRAMS:
            raise RuntimeError(f"unit tests start no process: {argv}")
        real_popen_init(self, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    subprocess.Popen.__init__ = no_process  # type: ignore[method-assign]
    try:
        import psycopg2
    except ImportError:
        return

    def no_postgres(*args: Any, **kwargs: Any) -> None:
        raise psycopg2.OperationalError("unit tests reach no PostgreSQL server")

    psycopg2.connect = no_postgres  # type: ignore[assignment]
