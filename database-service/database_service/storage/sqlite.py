"""SQLite backend: the embedded default (one file, WAL mode, a connection per thread)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from database_service.storage import sql
from database_service.storage.base import (
    UNAVAILABLE_MESSAGE,
    KnownCheck,
    NewSignal,
    NewTrade,
    StatsAggregate,
    Storage,
    StorageUnavailable,
    TradeFilter,
    check_known_rows,
    load_migrations,
    us_to_iso,
)
from database_service.storage.rows import SIGNALS, TRADES, Table


def sqlite_path(url: str) -> str:
    """Turn sqlite:///relative/path or sqlite:////absolute/path into a file path."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not path or path == "/":
        raise ValueError("DATABASE_URL: sqlite URL needs a file path, e.g. sqlite:///data/sardag.db")
    # sqlite:///data/x.db has path "/data/x.db": relative, like SQLAlchemy and limits.
    return path[1:]


_WRITE_FAILED = (
    "The database file could not be written (I/O error): writes are refused until it can be "
    "written again. Reads still work."
)
# Errors a client is told about in words of its own (extended codes first, then primary ones).
PUBLIC_MESSAGES = {
    sqlite3.SQLITE_READONLY: "The database file is read-only: writes are refused until it is writable "
    "again. Reads still work.",
    sqlite3.SQLITE_FULL: "The disk holding the database is full: writes are refused until space is "
    "freed. Reads still work.",
    sqlite3.SQLITE_IOERR_WRITE: _WRITE_FAILED,  # e.g. an immutable file (chattr +i), EPERM on write
    sqlite3.SQLITE_IOERR_FSYNC: _WRITE_FAILED,
    sqlite3.SQLITE_IOERR_TRUNCATE: _WRITE_FAILED,
}


def _now_us() -> int:
    return time.time_ns() // 1000


def _insert_or_get(
    cur: sqlite3.Cursor, table: Table, item: NewSignal | NewTrade, now: int
) -> tuple[dict[str, Any], bool]:
    """Insert one row; on a known client_id answer the stored row instead, and whether it is new."""
    values = CODEC.params(table, item)
    row = cur.execute(
        f"INSERT INTO {table.name} ({table.fields}, created_at) VALUES ({', '.join('?' * (len(values) + 1))}) "
        f"ON CONFLICT (client_id) WHERE client_id IS NOT NULL DO NOTHING RETURNING {table.selected}",
        (*values, now),
    ).fetchone()
    if row is not None:
        return CODEC.answer(table, row), True
    stored = cur.execute(f"SELECT {table.selected} FROM {table.name} WHERE client_id = ?", (item.client_id,))
    return CODEC.answer(table, stored.fetchone()), False


class SQLiteStorage(sql.SqlReads, Storage):
    """Storage on one SQLite file; readers never block the writer thanks to WAL."""

    dialect = "sqlite"

    def __init__(self, url: str, busy_timeout_ms: int = 5000) -> None:
        self.path = sqlite_path(url)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)

    @property
    def backend(self) -> str:
        """Always sqlite."""
        return "sqlite"

    def _connect(self) -> sqlite3.Connection:
        found: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if found is not None:
            return found
        if self._closed:
            raise StorageUnavailable("storage is closed")
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_ms / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        self._enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        # SQLite opens a file it may not write read-only, and the connection stays so.
        self._local.opened_read_only = not _writable(self.path)
        with self._lock:
            self._all.append(conn)
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive lock and SQLite does not wait for it through the
        # busy handler; retry while another process creates the same new file.
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    @contextmanager
    def _cursor(self, write: bool = False) -> Iterator[sqlite3.Cursor]:
        try:
            conn = self._connect()
            if write and self._local.opened_read_only and _writable(self.path):
                self._forget_connection()  # the file is writable again: so is a new connection
                conn = self._connect()
            cur = conn.cursor()
            if not write:
                yield cur
                return
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                conn.commit()
            except BaseException:
                self._roll_back(conn)  # also after a failed COMMIT, which leaves it open
                raise
        except sqlite3.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def _roll_back(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.rollback()
        except sqlite3.Error:
            self._forget_connection()  # in an unknown state: the next call opens another

    def _unavailable(self, error: sqlite3.OperationalError) -> StorageUnavailable:
        """The 503 for a failed statement: read-only file and full disk told apart."""
        code = getattr(error, "sqlite_errorcode", 0)
        if code & 0xFF == sqlite3.SQLITE_READONLY:
            # SQLite opened the file read-only and stays so: reopen once it is writable again.
            self._forget_connection()
        public = PUBLIC_MESSAGES.get(code) or PUBLIC_MESSAGES.get(code & 0xFF, UNAVAILABLE_MESSAGE)
        name = getattr(error, "sqlite_errorname", "")
        return StorageUnavailable(f"sqlite: {error} [{name}] ({self.path})", public)

    def _forget_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        conn.close()

    def _pending(self) -> bool:
        """Whether a migration is pending, found without the write lock (a read-only file has none)."""
        with self._cursor() as cur:
            table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            if cur.execute(table).fetchone() is None:
                return True
            done = {row[0] for row in cur.execute("SELECT version FROM schema_migrations")}
        return any(m.version not in done for m in load_migrations(self.dialect))

    def migrate(self) -> list[str]:
        """Apply pending migrations under BEGIN IMMEDIATE, so concurrent runs serialise."""
        if not self._pending():
            return []
        applied = []
        with self._cursor(write=True) as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            )
            done = {row[0] for row in cur.execute("SELECT version FROM schema_migrations")}
            for migration in load_migrations(self.dialect):
                if migration.version in done:
                    continue
                for statement in _statements(migration.sql):
                    cur.execute(statement)
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _now_us()),
                )
                applied.append(migration.label)
        return applied

    def applied_migrations(self) -> list[str]:
        """Names recorded in schema_migrations, oldest first (none before the first migration)."""
        with self._cursor() as cur:
            table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            if cur.execute(table).fetchone() is None:
                return []
            rows = cur.execute("SELECT version, name FROM schema_migrations ORDER BY version")
            return [f"{version:04d}_{name}" for version, name in rows]

    def save_signals(
        self, signals: Sequence[NewSignal], check_known: KnownCheck | None = None, full: bool = True
    ) -> list[tuple[dict[str, Any], bool]]:
        """Insert signals in one transaction; a known client_id returns the stored row (always whole)."""
        now = _now_us()
        results = []
        with self._cursor(write=True) as cur:
            for signal in signals:
                results.append(_insert_or_get(cur, SIGNALS, signal, now))
            check_known_rows(check_known, results)
        return results

    def save_trade(self, trade: NewTrade, check_known: KnownCheck | None = None) -> tuple[dict[str, Any], bool]:
        """Insert one trade; a known client_id returns the stored row."""
        with self._cursor(write=True) as cur:
            stored, new = _insert_or_get(cur, TRADES, trade, _now_us())
            check_known_rows(check_known, [(stored, new)])
            if new:
                cur.execute(sql.BUMP_STATS_VERSION)
        return stored, new

    def stats_version(self) -> int:
        """The statistics version (raised in every new trade's transaction)."""
        with self._cursor() as cur:
            return int(cur.execute(sql.READ_STATS_VERSION).fetchone()[0])

    def rebuild_summaries(self) -> None:
        """No summaries on SQLite (statistics read the trades); only the version is raised."""
        with self._cursor(write=True) as cur:
            cur.execute(sql.BUMP_STATS_VERSION)

    def trade_stats(self, filters: TradeFilter, group_by: str | None) -> list[StatsAggregate]:
        """Aggregates and drawdown by window functions; stddev from sum and sum of squares."""
        query, params = sql.stats_query(
            filters, group_by, CODEC.placeholder, CODEC.store_time, dialect="sqlite"
        )
        with self._cursor() as cur:
            rows = cur.execute(query, params).fetchall()
        return [sql.aggregate_from_sums(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Exact row counts."""
        with self._cursor() as cur:
            signals = cur.execute("SELECT count(*) FROM signals").fetchone()[0]
            trades = cur.execute("SELECT count(*) FROM trades").fetchone()[0]
        return {"signals": signals, "trades": trades}

    def ping(self) -> None:
        """Run SELECT 1."""
        with self._cursor() as cur:
            cur.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


def _writable(path: str) -> bool:
    """Whether this process may write `path` now.

    access(2), not a trial open: closing any descriptor of the file would drop the POSIX
    locks SQLite's connections hold on it.
    """
    return os.access(path, os.W_OK)


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def _dump(metadata: dict[str, Any] | None) -> str | None:
    return None if metadata is None else json.dumps(metadata, separators=(",", ":"))


def _load(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None


# SQLite stores times as epoch microseconds, numbers as REAL and JSON as text.
CODEC = sql.Codec(
    placeholder="?",
    store_time=sql.identity,
    store_number=float,
    store_json=_dump,
    read_time=us_to_iso,
    read_json=_load,
)
SQLiteStorage.codec = CODEC  # CODEC is built below the class, from the converters above it
