"""Sliding-window backend shared by every process of one host: a SQLite file under a file lock.

Without Redis, a gunicorn master with several workers points them all at one such file
(shared/gunicorn_hooks.py), so a limit of N holds exactly across the workers. Each allowed
hit is one row holding its monotonic time (CLOCK_MONOTONIC is the same for every process of
a host), with a count per key beside them. A process-wide lock plus `flock` serialise the
decisions: a waiting worker sleeps in the kernel and wakes when the lock frees, instead of
polling SQLite's busy handler (1 ms and longer naps). The file lives in tmpfs-backed or temporary
storage, WAL with synchronous=OFF: it survives a crashed worker, not a crashed host.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote, urlsplit

from shared.rate_limiter.base import RateLimitResult
from shared.rate_limiter.memory import DEFAULT_MAX_KEYS

HOST_STORE_ENV = "SARDAG_RATE_LIMIT_HOST_STORE"  # set by the gunicorn master for its workers
HOST_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
PURGE_EVERY = 2000  # writes between sweeps of keys whose every hit has left the window
# One row per allowed hit, and per key its count, oldest and newest hit: a decision costs a
# few index seeks whatever the limit (100,000 is no slower than 60), a rejection one read.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hits (key TEXT NOT NULL, t REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hits_key_t ON hits (key, t)",
    "CREATE TABLE IF NOT EXISTS counts "
    "(key TEXT PRIMARY KEY, n INTEGER NOT NULL, oldest REAL NOT NULL, newest REAL NOT NULL) WITHOUT ROWID",
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
            allowed, count, oldest = self._decide(db, key, limit, now, now - window)
        frees_in = oldest + window - now
        return RateLimitResult(
            allowed=allowed,
            limit=limit,
            remaining=max(0, limit - count),
            reset_at=self._wall() + frees_in,
            retry_after=0.0 if allowed else frees_in,
        )

    def _decide(
        self, db: sqlite3.Connection, key: str, limit: int, now: float, cutoff: float
    ) -> tuple[bool, int, float]:
        """(allowed, hits in the window after this one, time of the oldest of them)."""
        row = db.execute("SELECT n, oldest FROM counts WHERE key = ?", (key,)).fetchone()
        count, oldest = row or (0, now)
        if count < limit or oldest <= cutoff:  # a write follows; a plain rejection only read
            db.execute("BEGIN")
            try:
                count, oldest, allowed = self._admit(db, key, limit, now, cutoff, count, oldest)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return allowed, count, oldest
        return False, count, oldest

    def _admit(
        self, db: sqlite3.Connection, key: str, limit: int, now: float, cutoff: float, count: int, oldest: float
    ) -> tuple[int, float, bool]:
        if count and oldest <= cutoff:
            count -= db.execute("DELETE FROM hits WHERE key = ? AND t <= ?", (key, cutoff)).rowcount
            found = db.execute("SELECT min(t) FROM hits WHERE key = ?", (key,)).fetchone()[0]
            oldest = now if found is None else found
        allowed = count < limit
        if allowed:
            db.execute("INSERT INTO hits VALUES (?, ?)", (key, now))
            oldest = now if count == 0 else oldest
            count += 1
        if count:
            db.execute(
                "INSERT INTO counts VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET n = excluded.n, "
                "oldest = excluded.oldest, newest = max(newest, excluded.newest)",
                (key, count, oldest, now if allowed else cutoff),
            )
        else:
            db.execute("DELETE FROM counts WHERE key = ?", (key,))
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            self._purge(db, cutoff)
        return count, oldest, allowed

    def _purge(self, db: sqlite3.Connection, cutoff: float) -> None:
        """Drop keys with no hit left in the window, then the least recent past `max_keys`."""
        idle = "SELECT key FROM counts WHERE newest <= ?"  # every hit of these has left the window
        db.execute(f"DELETE FROM hits WHERE key IN ({idle})", (cutoff,))
        db.execute("DELETE FROM counts WHERE newest <= ?", (cutoff,))
        (count,) = db.execute("SELECT count(*) FROM counts").fetchone()
        if count > self.max_keys:
            stale = "SELECT key FROM counts ORDER BY newest LIMIT ?"
            db.execute(f"DELETE FROM hits WHERE key IN ({stale})", (count - self.max_keys,))
            db.execute(f"DELETE FROM counts WHERE key IN ({stale})", (count - self.max_keys,))

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """This process's connection, under the process lock and the host-wide file lock."""
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
            for statement in SCHEMA:
                conn.execute(statement)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def __len__(self) -> int:
        with self._locked() as db:
            return int(db.execute("SELECT count(*) FROM counts").fetchone()[0])

    def ping(self) -> None:
        """Raise unless the store's file can be opened and read (for /health)."""
        with self._locked() as db:  # one row, not a count: every worker's decisions wait on this lock
            db.execute("SELECT 1 FROM counts LIMIT 1").fetchall()

    def clear(self) -> None:
        """Forget every key."""
        with self._locked() as db:
            db.execute("DELETE FROM hits")
            db.execute("DELETE FROM counts")

    def close(self) -> None:
        """Close this process's connection and lock descriptor."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
                os.close(self._lock_fd)
            self._conn, self._lock_fd = None, -1
