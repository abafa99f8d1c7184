"""SQLite: the database file made read-only, and the disk full.

Must hold: writes answer 503 with a clear message, reads keep working, nothing acknowledged
is lost, and writes work again once the fault is removed.

The database lives on a small ext4 file system of the test's own (a loop-mounted image, no
reserved blocks); the service runs without the capability to override file permissions
(root ignores them otherwise; `setpriv` drops it). Three faults, each on a running service:
- disk full: a file fills the file system, then is deleted;
- immutable: `chattr +i` on the database and its WAL (read-only even for root, enforced on
  the open descriptors), then `chattr -i`;
- read-only after a restart: `chmod 0444`, which open descriptors ignore, so the workers are
  reloaded (SIGHUP) as a restart or deploy would. SQLite creates a WAL and shared-memory
  file with the database file's mode, so files created during the fault are read-only too,
  and a worker that mapped the shared memory read-only keeps it so while any of its
  connections is open: the repair restores the mode of `sardag.db*` and reloads the workers.
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
from sardag_testing import require_server, wait_until
from sardag_testing.processes import Launcher, Running
from sardag_testing.traffic import Answer, Client, Traffic, statuses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.database, pytest.mark.api]

# Root without CAP_DAC_OVERRIDE: file permissions apply to the service as to any user.
NO_OVERRIDE = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
DISK_SIZE = "16M"
READ_ONLY = "The database file is read-only"
DISK_FULL = "The disk holding the database is full"
WRITE_FAILED = "The database file could not be written"
RELOAD_SECONDS = 4.0  # SIGHUP: old workers answer their kept-alive connections up to 2 s more


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory for the service, its `data/` a small ext4 file system of its own."""
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("setpriv", "mkfs.ext4", "chattr")):
        require_server("root, setpriv, mkfs.ext4 and chattr", "needed to mount a file system and break it")
    root = Path(tempfile.mkdtemp(prefix="sardag-sqlite-"))
    data = root / "data"
    data.mkdir()
    image = root / "disk.img"
    subprocess.run(["truncate", "-s", DISK_SIZE, str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(data)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["chattr", "-i", *map(str, data.glob("sardag.db*"))], check=False)
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


def refused_clearly(answer: Answer, expected: tuple[str, ...]) -> bool:
    """A 503 with Retry-After whose message names the fault (one of `expected`)."""
    named = any(words in message(answer) for words in expected)
    return answer.status == 503 and named and "retry-after" in answer.headers


def message(answer: Answer) -> str:
    """The `message` of a JSON error body ('' otherwise)."""
    return str(answer.body.get("message", "")) if isinstance(answer.body, dict) else ""


def run_fault(
    service: Running,
    make: Callable[[], None],
    undo: Callable[[], None],
    expected: tuple[str, ...],
    settle: float = 0.0,
) -> tuple[list[Answer], dict[str, float]]:
    """Traffic through: normal, the fault until a write is refused with `expected`, the repair.

    `marks["writing"]` is when every write must succeed: the first stored after the repair,
    or `settle` seconds after the repair if later (a reload's old workers finish meanwhile).
    """
    marks: dict[str, float] = {}
    with Traffic() as traffic:
        traffic.loop("write", writer(uuid.uuid4().hex[:10]), service.url, threads=2, pause=0.01)
        traffic.loop("read", reader, service.url, threads=1, pause=0.02)
        wait_until(lambda: statuses(traffic.answers("write")).get(201, 0) >= 20, 30, "first writes")
        marks["fault"] = time.monotonic()
        make()

        def refused() -> float:
            found = [a.started for a in traffic.answers("write") if refused_clearly(a, expected)]
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

        marks["stored"] = wait_until(written, 30, "a write after the repair")
        marks["writing"] = max(marks["stored"], marks["repaired"] + settle)
        time.sleep(max(2.0, marks["writing"] + 2.0 - time.monotonic()))
    return traffic.answers(), marks


def check(
    answers: list[Answer], marks: dict[str, float], expected: tuple[str, ...], database: Path, log: str = ""
) -> None:
    """The contract, and the figure (`log`: the service's, for failure messages)."""
    writes = [a for a in answers if a.kind == "write"]
    reads = [a for a in answers if a.kind == "read"]
    refused = [a for a in writes if a.status != 201]
    others = sorted({f"{a.status} {message(a)}" for a in refused if not refused_clearly(a, expected)})
    assert not others, f"refusals other than a 503 saying {expected!r}: {others}\n{log}"
    assert all(a.status == 200 for a in reads), f"reads failed: {statuses(reads)}"
    after = [a for a in writes if a.started >= marks["writing"]]
    failing = sorted({f"{a.status} {message(a)}" for a in after if a.status != 201})
    assert not failing, f"writes failing after the repair: {statuses(after)} {failing}\n{log}"
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
        f"{marks['stored'] - marks['repaired']:.2f} s after the repair; {len(acked)} acknowledged, all stored"
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

    answers, marks = run_fault(service, fill, filler.unlink, (DISK_FULL,))
    print("sqlite disk full:", end="")
    check(answers, marks, (DISK_FULL,), home / "data" / "sardag.db")


def test_database_file_immutable(service: Running, home: Path) -> None:
    files = [home / "data" / "sardag.db", home / "data" / "sardag.db-wal"]  # never -shm: it is mapped

    def chattr(flag: str) -> Callable[[], None]:
        return lambda: subprocess.run(["chattr", flag, *map(str, files)], check=True)

    # The first write fails to write (EPERM); a connection reopened then is read-only.
    answers, marks = run_fault(service, chattr("+i"), chattr("-i"), (WRITE_FAILED, READ_ONLY))
    print("sqlite immutable file:", end="")
    check(answers, marks, (WRITE_FAILED, READ_ONLY), files[0], "\n".join(service.log_messages()[-30:]))


def test_database_file_read_only_after_restart(service: Running, home: Path) -> None:
    database = home / "data" / "sardag.db"

    def make_read_only() -> None:
        database.chmod(0o444)
        service.signal(signal.SIGHUP)  # the workers reopen the file, as after a restart

    def repair() -> None:
        for path in home.joinpath("data").glob("sardag.db*"):
            path.chmod(0o644)
        service.signal(signal.SIGHUP)

    answers, marks = run_fault(service, make_read_only, repair, (READ_ONLY,), settle=RELOAD_SECONDS)
    print("sqlite read-only file, restarted:", end="")
    check(answers, marks, (READ_ONLY,), database, "\n".join(service.log_messages()[-30:]))
