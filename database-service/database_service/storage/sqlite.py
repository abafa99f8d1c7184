"""SQLite backend: the embedded default (one file, WAL mode, a connection per thread)."""

from __future__ import annotations

import json
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
    NewSignal,
    NewTrade,
    SignalFilter,
    StatsAggregate,
    Storage,
    StorageUnavailable,
    TradeFilter,
    load_migrations,
    us_to_iso,
)

SIGNAL_COLUMNS = (
    "id, symbol, action, price, confidence, strategy, timeframe, ts, metadata, client_id, created_at"
)
TRADE_COLUMNS = (
    "id, symbol, side, entry_price, exit_price, quantity, fees, pnl, pnl_percent, outcome, "
    "strategy, signal_id, entry_time, exit_time, duration_seconds, metadata, client_id, created_at"
)


def sqlite_path(url: str) -> str:
    """Turn sqlite:///relative/path or sqlite:////absolute/path into a file path."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not path or path == "/":
        raise ValueError("DATABASE_URL: sqlite URL needs a file path, e.g. sqlite:///data/sardag.db")
    # sqlite:///data/x.db has path "/data/x.db": relative, like SQLAlchemy and limits.
    return path[1:]


def _now_us() -> int:
    return time.time_ns() // 1000


class SQLiteStorage(Storage):
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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StorageUnavailable("storage is closed")
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_ms / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        self._enable_wal(conn)
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
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
            cur = conn.cursor()
            if not write:
                yield cur
                return
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
            conn.commit()
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(f"sqlite: {exc}") from exc

    def migrate(self) -> list[str]:
        """Apply pending migrations under BEGIN IMMEDIATE, so concurrent runs serialise."""
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
                applied.append(f"{migration.version:04d}_{migration.name}")
        return applied

    def applied_migrations(self) -> list[str]:
        """Names recorded in schema_migrations, oldest first."""
        with self._cursor() as cur:
            rows = cur.execute("SELECT version, name FROM schema_migrations ORDER BY version")
            return [f"{version:04d}_{name}" for version, name in rows]

    def save_signals(self, signals: Sequence[NewSignal]) -> list[tuple[dict[str, Any], bool]]:
        """Insert signals in one transaction; a known client_id returns the stored row."""
        now = _now_us()
        results = []
        with self._cursor(write=True) as cur:
            for signal in signals:
                row = cur.execute(
                    f"INSERT INTO signals (symbol, action, price, confidence, strategy, timeframe, "
                    f"ts, metadata, client_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    f"ON CONFLICT (client_id) WHERE client_id IS NOT NULL DO NOTHING "
                    f"RETURNING {SIGNAL_COLUMNS}",
                    _signal_params(signal, now),
                ).fetchone()
                if row is None:
                    row = cur.execute(
                        f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE client_id = ?",
                        (signal.client_id,),
                    ).fetchone()
                    results.append((_signal_dict(row), False))
                else:
                    results.append((_signal_dict(row), True))
        return results

    def get_signal(self, signal_id: int) -> dict[str, Any] | None:
        """One signal by id."""
        with self._cursor() as cur:
            row = cur.execute(f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE id = ?", (signal_id,)).fetchone()
        return _signal_dict(row) if row else None

    def signal_history(
        self, filters: SignalFilter, after: tuple[int, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Keyset page, newest first."""
        where, params = sql.signal_where(filters, after, "?", lambda us: us)
        query = f"SELECT {SIGNAL_COLUMNS} FROM signals {where} ORDER BY ts DESC, id DESC LIMIT ?"
        with self._cursor() as cur:
            rows = cur.execute(query, [*params, limit]).fetchall()
        return [_signal_dict(row) for row in rows]

    def save_trade(self, trade: NewTrade) -> tuple[dict[str, Any], bool]:
        """Insert one trade; a known client_id returns the stored row."""
        with self._cursor(write=True) as cur:
            row = cur.execute(
                f"INSERT INTO trades ({TRADE_COLUMNS.removeprefix('id, ')}) VALUES "
                f"({', '.join('?' * 17)}) ON CONFLICT (client_id) WHERE client_id IS NOT NULL "
                f"DO NOTHING RETURNING {TRADE_COLUMNS}",
                _trade_params(trade, _now_us()),
            ).fetchone()
            if row is not None:
                return _trade_dict(row), True
            row = cur.execute(
                f"SELECT {TRADE_COLUMNS} FROM trades WHERE client_id = ?", (trade.client_id,)
            ).fetchone()
            return _trade_dict(row), False

    def trade_stats(self, filters: TradeFilter, group_by: str | None) -> list[StatsAggregate]:
        """Aggregates and drawdown by window functions; stddev from sum and sum of squares."""
        query, params = sql.stats_query(filters, group_by, "?", lambda us: us, dialect="sqlite")
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


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def _dump(metadata: dict[str, Any] | None) -> str | None:
    return None if metadata is None else json.dumps(metadata, separators=(",", ":"))


def _signal_params(signal: NewSignal, now: int) -> tuple[Any, ...]:
    return (
        signal.symbol,
        signal.action,
        float(signal.price),
        signal.confidence,
        signal.strategy,
        signal.timeframe,
        signal.ts_us,
        _dump(signal.metadata),
        signal.client_id,
        now,
    )


def _trade_params(trade: NewTrade, now: int) -> tuple[Any, ...]:
    return (
        trade.symbol,
        trade.side,
        float(trade.entry_price),
        float(trade.exit_price),
        float(trade.quantity),
        float(trade.fees),
        float(trade.pnl),
        trade.pnl_percent,
        trade.outcome,
        trade.strategy,
        trade.signal_id,
        trade.entry_us,
        trade.exit_us,
        trade.duration_seconds,
        _dump(trade.metadata),
        trade.client_id,
        now,
    )


def _float(value: Any) -> float | None:
    # SQLite hands back REAL values that are whole numbers as int, e.g. from RETURNING.
    return None if value is None else float(value)


def _signal_dict(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "symbol": row[1],
        "action": row[2],
        "price": float(row[3]),
        "confidence": _float(row[4]),
        "strategy": row[5],
        "timeframe": row[6],
        "timestamp": us_to_iso(row[7]),
        "metadata": json.loads(row[8]) if row[8] else None,
        "client_id": row[9],
        "created_at": us_to_iso(row[10]),
    }


def _trade_dict(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "symbol": row[1],
        "side": row[2],
        "entry_price": float(row[3]),
        "exit_price": float(row[4]),
        "quantity": float(row[5]),
        "fees": float(row[6]),
        "pnl": float(row[7]),
        "pnl_percent": float(row[8]),
        "outcome": row[9],
        "strategy": row[10],
        "signal_id": row[11],
        "entry_time": us_to_iso(row[12]),
        "exit_time": us_to_iso(row[13]),
        "duration_seconds": _float(row[14]),
        "metadata": json.loads(row[15]) if row[15] else None,
        "client_id": row[16],
        "created_at": us_to_iso(row[17]),
    }
