"""SQLite: the database file made read-only, and the disk full.

Must hold: writes answer 503 with a clear message, reads keep working, nothing acknowledged
is lost, and writes work again once the fault is removed (no service restart).

The service runs without the capability to override file permissions (root ignores them
otherwise; `setpriv` drops it) on a small tmpfs of the test's own. A worker that already
has the file open keeps its write access after a chmod (the kernel checks permissions at
open), so the read-only fault is made visible by reloading the workers (SIGHUP: they
reopen the file), as a restart or deploy would.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from shared.testing import require_server, wait_until
from shared.testing.processes import Launcher, Running
from shared.testing.traffic import Answer, Client, Traffic, statuses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.api]

# Root without CAP_DAC_OVERRIDE: file permissions apply to the service as to any user.
NO_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
DISK_SIZE = "8m"
READ_ONLY = "The database file is read-only"
DISK_FULL = "The disk holding the database is full"


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory for the service, its `data/` a small tmpfs of its own."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        require_server("root and setpriv", "mounting a tmpfs and dropping CAP_DAC_OVERRIDE need both")
    root = Path(tempfile.mkdtemp(prefix="sardag-sqlite-"))
    data = root / "data"
    data.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0755", "tmpfs", str(data)], check=True
    )
    try:
        yield root
    finally:
        if subprocess.run(["umount", str(data)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(data)], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def service(home: Path) -> Iterator[Running]:
    """database-service on SQLite in `home/data`, two workers, bound by file permissions."""
    with Launcher(home) as launcher:
        yield launcher.gunicorn(
            "database-service",
            workers=2,
            prefix=NO_OVERRIDE,
            DATABASE_URL=f"sqlite:///{home / 'data' / 'sardag.db'}",
            RATE_LIMIT_ENABLED="0",
        )


def writer(marker: str) -> Callable[[Client, int], Answer]:
    """Saves one signal per call, with a unique client_id."""

    def step(client: Client, n: int) -> Answer:
        body = {"symbol": "ETHUSDT", "action": "SELL", "price": 2000 + n, "client_id": f"{marker}-{n}"}
        return client.post("/signals/save", body)

    return step


def reader(client: Client, n: int) -> Answer:
    """Reads the newest signals."""
    return client.get("/signals/history?limit=20")


def message(answer: Answer) -> str:
    """The `message` of a JSON error body ('' otherwise)."""
    return str(answer.body.get("message", "")) if isinstance(answer.body, dict) else ""


def run_fault(
    service: Running, make: Callable[[], None], undo: Callable[[], None], expected: str
) -> tuple[list[Answer], dict[str, float]]:
    """Traffic through: normal, the fault until a write is refused with `expected`, the repair."""
    marks: dict[str, float] = {}
    with Traffic() as traffic:
        traffic.loop("write", writer(uuid.uuid4().hex[:10]), service.url, threads=2, pause=0.01)
        traffic.loop("read", reader, service.url, threads=1, pause=0.02)
        wait_until(lambda: statuses(traffic.answers("write")).get(201, 0) >= 20, 30, "first writes")
        marks["fault"] = time.monotonic()
        make()

        def refused() -> float:
            found = [a.started for a in traffic.answers("write") if expected in message(a)]
            return min(found, default=0.0)

        marks["refused"] = wait_until(refused, 30, f"a write refused with {expected!r}")
        time.sleep(2.0)
        marks["repaired"] = time.monotonic()
        undo()

        def written() -> float:
            found = [
                a.started for a in traffic.answers("write") if a.started > marks["repaired"] and a.status == 201
            ]
            return min(found, default=0.0)

        marks["writing"] = wait_until(written, 30, "a write after the repair")
        time.sleep(2.0)
    return traffic.answers(), marks


def check(answers: list[Answer], marks: dict[str, float], expected: str, database: Path) -> None:
    """The contract, and the figure."""
    writes = [a for a in answers if a.kind == "write"]
    reads = [a for a in answers if a.kind == "read"]
    refused = [a for a in writes if a.status != 201]
    assert all(a.status == 503 and expected in message(a) and "retry-after" in a.headers for a in refused), (
        f"refusals other than a 503 saying {expected!r}: {refused[:3]}"
    )
    assert all(a.status == 200 for a in reads), f"reads failed: {statuses(reads)}"
    after = [a for a in writes if a.started >= marks["writing"]]
    assert all(a.status == 201 for a in after), f"writes failing after the repair: {statuses(after)}"
    acked = {a.body["client_id"]: a.body["id"] for a in writes if a.status == 201}
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        stored = dict(conn.execute("SELECT client_id, id FROM signals").fetchall())
    lost = [k for k, v in acked.items() if stored.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged writes not stored"
    fault = [a for a in answers if marks["refused"] <= a.started < marks["repaired"]]
    fault_writes = statuses(a for a in fault if a.kind == "write")
    fault_reads = statuses(a for a in fault if a.kind == "read")
    print(
        f"\n  writes {statuses(writes)}, reads {statuses(reads)}; while refused: writes {fault_writes}, "
        f"reads {fault_reads}; "
        f"first write refused {marks['refused'] - marks['fault']:.2f} s after the fault, first write stored "
        f"{marks['writing'] - marks['repaired']:.2f} s after the repair; {len(acked)} acknowledged, all stored"
    )


def test_disk_full(service: Running, home: Path) -> None:
    filler = home / "data" / "filler"

    def fill() -> None:
        with filler.open("wb") as sink:
            try:
                while True:
                    sink.write(b"\0" * 65536)
                    sink.flush()
            except OSError:
                pass  # ENOSPC: the disk is full, which is the point

    answers, marks = run_fault(service, fill, filler.unlink, DISK_FULL)
    print("sqlite disk full:", end="")
    check(answers, marks, DISK_FULL, home / "data" / "sardag.db")


def test_database_file_read_only(service: Running, home: Path) -> None:
    database = home / "data" / "sardag.db"

    def make_read_only() -> None:
        database.chmod(0o444)
        service.signal(signal.SIGHUP)  # the workers reopen the file, as after a restart

    answers, marks = run_fault(service, make_read_only, lambda: database.chmod(0o644), READ_ONLY)
    print("sqlite read-only file:", end="")
    check(answers, marks, READ_ONLY, database)
