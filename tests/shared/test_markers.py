"""The suite's marker rules: exactly one of unit or integration, and no server for a unit test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sardag_testing.markers import kind_problems
from sardag_testing.processes import SUPPORT_PATH

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeItem:
    """What kind_problems reads of a collected test."""

    nodeid: str
    marks: set[str]
    fixturenames: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return ROOT / self.nodeid.split("::")[0]

    def get_closest_marker(self, name: str) -> Any:
        return name if name in self.marks else None


@pytest.mark.unit
def test_exactly_one_kind_and_no_server_for_a_unit_test() -> None:
    items = [
        FakeItem("tests/x/test_a.py::test_ok", {"unit"}),
        FakeItem("tests/x/test_a.py::test_both", {"unit", "integration"}),
        FakeItem("tests/x/test_a.py::test_neither", {"slow"}),
        FakeItem("tests/x/test_a.py::test_redis", {"unit"}, ["clean_redis", "tmp_path"]),
        FakeItem("tests/x/test_a.py::test_real_redis", {"integration"}, ["clean_redis"]),
        FakeItem("websocket-streaming/tests/test_b.py::test_unsorted", set()),
    ]
    assert kind_problems(items) == [  # FakeItem stands in for pytest.Item
        "tests/x/test_a.py::test_both: marked unit and integration",
        "tests/x/test_a.py::test_neither: marked neither unit nor integration",
        "tests/x/test_a.py::test_redis: marked unit but uses clean_redis",
        "websocket-streaming/tests/test_b.py::test_unsorted: marked neither unit nor integration",
    ]


GUARDED = """
import socket, subprocess, sys
from sardag_testing.markers import install_server_guard
install_server_guard()
for attempt in (
    lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
    lambda: socket.create_connection(("127.0.0.1", 6379), timeout=1),
    lambda: __import__("psycopg2").connect("postgresql://postgres@127.0.0.1:5432/test"),
):
    try:
        attempt()
        print("allowed")
    except Exception as exc:
        print(type(exc).__name__, exc)
subprocess.run(["git", "--version"], capture_output=True, check=True)
print("git allowed")
"""


@pytest.mark.integration
@pytest.mark.slow
def test_the_unit_guard_refuses_processes_and_servers() -> None:
    env = {**os.environ, "PYTHONPATH": str(SUPPORT_PATH)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(GUARDED)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("RuntimeError unit tests start no process")
    assert lines[1] == "ConnectionRefusedError unit tests reach no server (port 6379)"
    assert lines[2] == "OperationalError unit tests reach no PostgreSQL server"
    assert lines[3] == "git allowed"


IN_A_WORKER = """
import subprocess, sys

import pytest


@pytest.mark.unit
@pytest.mark.parametrize("n", range(4))
def test_a_process(n):
    with pytest.raises(RuntimeError, match="unit tests start no process"):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


@pytest.mark.integration
@pytest.mark.slow
def test_the_unit_guard_holds_in_every_parallel_worker(tmp_path: Path) -> None:
    # `-n`: the process that starts the workers goes unguarded (it runs no test); each worker is guarded.
    (tmp_path / "test_guarded.py").write_text(IN_A_WORKER)
    here = [sys.executable, "-m", "pytest", "-c", ROOT / "pytest.ini", "--rootdir", ROOT, "-p", "conftest"]
    done = subprocess.run(
        [*here, "-p", "no:cacheprovider", "-q", "-n", "2", tmp_path / "test_guarded.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "SARDAG_UNIT_GUARD": "1", "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
