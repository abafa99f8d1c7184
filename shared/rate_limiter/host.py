"""Sliding-window backend shared by every process of one host: a SQLite file under a file lock.

Without Redis, a gunicorn master with several workers points them all at one such file
(shared/gunicorn_hooks.py), so a limit of N holds exactly across the workers. Each key is
one row holding the monotonic times of its allowed hits (CLOCK_MONOTONIC is the same for
every process of a host). A process-wide lock plus `flock` serialise the decisions: a
waiting worker sleeps in the kernel and wakes when the lock frees, instead of polling
SQLite's busy handler (1 ms and longer naps). The file lives in tmpfs-backed or temporary
storage, WAL with synchronous=OFF: it survives a crashed worker, not a crashed host.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

from shared.rate_limiter.base import RateLimitResult
from shared.rate_limiter.memory import DEFAULT_MAX_KEYS

HOST_STORE_ENV = "SARDAG_RATE_LIMIT_HOST_STORE"  # set by the gunicorn master for its workers
HOST_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
PURGE_EVERY = 2000  # writes between sweeps of keys whose every hit has left the window
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS windows "
    "(key TEXT PRIMARY KEY, stamps BLOB NOT NULL, newest REAL NOT NULL) WITHOUT ROWID"
)


def host_store_path(url: str) -> str:
    """The file of a `file:///absolute/path` store URL."""
    path = unquote(urlsplit(url).path)
    if not path.startswith("/"):
        raise ValueError(f"host rate-limit store needs an absolute path: {url!r}")
    return path


class HostBackend:
    """Exact across the processes of one host that open the same file."""

    name = "host"

    def __init__(
        self,
        path: str,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_keys = max_keys
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._pid = 0
        self._writes = 0

    def hit(self, key: str, limit: int, window: float) -> RateLimitResult:
        """Allow when fewer than `limit` hits were allowed for `key` in the last `window` s."""
        with self._locked() as db:
            now = self._clock()
            row = db.execute("SELECT stamps FROM windows WHERE key = ?", (key,)).fetchone()
            stamps = array("d", row[0]) if row else array("d")
            expired = bisect.bisect_right(stamps, now - window)
            del stamps[:expired]
            allowed = len(stamps) < limit
            if allowed:
                stamps.append(now)
            if allowed or expired:
                self._write(db, key, stamps, now - window)
            frees_in = stamps[0] + window - now if stamps else window
        return RateLimitResult(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - len(stamps)),
            reset_at=self._wall() + frees_in,
            retry_after=0.0 if allowed else frees_in,
        )

    def _write(self, db: sqlite3.Connection, key: str, stamps: array[float], cutoff: float) -> None:
        if stamps:
            db.execute("INSERT OR REPLACE INTO windows VALUES (?, ?, ?)", (key, stamps.tobytes(), stamps[-1]))
        else:
            db.execute("DELETE FROM windows WHERE key = ?", (key,))
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            self._purge(db, cutoff)

    def _purge(self, db: sqlite3.Connection, cutoff: float) -> None:
        """Drop keys with no hit left in the window, then the least recent past `max_keys`."""
        db.execute("DELETE FROM windows WHERE newest <= ?", (cutoff,))
        (count,) = db.execute("SELECT count(*) FROM windows").fetchone()
        if count > self.max_keys:
            db.execute(
                "DELETE FROM windows WHERE key IN (SELECT key FROM windows ORDER BY newest LIMIT ?)",
                (count - self.max_keys,),
            )

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._connection()
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield db
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # first use, or a forked child: its own connection and lock descriptor
        self._lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute(SCHEMA)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def __len__(self) -> int:
        with self._locked() as db:
            return int(db.execute("SELECT count(*) FROM windows").fetchone()[0])

    def clear(self) -> None:
        """Forget every key."""
        with self._locked() as db:
            db.execute("DELETE FROM windows")

    def close(self) -> None:
        """Close this process's connection and lock descriptor."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
                os.close(self._lock_fd)
            self._conn, self._lock_fd = None, -1
