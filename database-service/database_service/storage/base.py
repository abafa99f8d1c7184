"""Storage interface shared by the SQLite and PostgreSQL backends."""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

# Declared with their tables' columns in rows.py; imported from here too.
from database_service.storage.rows import NewSignal as NewSignal
from database_service.storage.rows import NewTrade as NewTrade

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)


UNAVAILABLE_MESSAGE = "The database is unavailable; retry shortly."

# Called with (index in the request, stored row) of every item whose client_id was already
# held, inside the saving transaction: raising there stores nothing of the request.
KnownCheck = Callable[[list[tuple[int, dict[str, Any]]]], None]


def check_known_rows(check_known: KnownCheck | None, results: Sequence[tuple[dict[str, Any], bool]]) -> None:
    """Give `check_known` the (index, stored row) of every result that was not inserted."""
    known = [(i, stored) for i, (stored, new) in enumerate(results) if not new]
    if check_known is not None and known:
        check_known(known)


class StorageError(Exception):
    """Base class for storage failures."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or is busy; the caller should retry later.

    `str(error)` is the reason for operators (the driver's message, credentials masked);
    `public_message` is what a client is told in the 503 answer.
    """

    def __init__(self, reason: str, public_message: str = UNAVAILABLE_MESSAGE) -> None:
        super().__init__(reason)
        self.public_message = public_message


class SchemaPending(StorageUnavailable):
    """Required migrations are not applied and this service does not migrate (MIGRATE_ON_START=0)."""

    def __init__(self, pending: Sequence[str]) -> None:
        super().__init__(
            f"migrations pending: {', '.join(pending)}; MIGRATE_ON_START=0, so run "
            "`python -m database_service migrate` (every request answers 503 until then)",
            "The database schema is not up to date; retry after the operators have migrated it.",
        )
        self.pending = list(pending)


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines, tabs) collapsed into one space."""
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class SignalFilter:
    """Filters of /signals/history; since is inclusive, until exclusive."""

    symbol: str | None = None
    strategy: str | None = None
    action: str | None = None
    since_us: int | None = None
    until_us: int | None = None


@dataclass(frozen=True, slots=True)
class TradeFilter:
    """Filters of /performance/stats on exit time; since inclusive, until exclusive."""

    symbol: str | None = None
    strategy: str | None = None
    since_us: int | None = None
    until_us: int | None = None


@dataclass(frozen=True, slots=True)
class StatsAggregate:
    """Aggregates computed by the database for one group of trades."""

    key: str | None
    total: int
    wins: int
    losses: int
    total_pnl: float
    gross_profit: float
    gross_loss: float
    best: float | None
    worst: float | None
    stddev: float | None
    avg_duration: float | None
    max_drawdown: float


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned SQL migration file."""

    version: int
    name: str
    sql: str
    requires_extension: str | None

    @property
    def label(self) -> str:
        """`0002_timescaledb`: how schema_migrations, logs and the CLI name it."""
        return f"{self.version:04d}_{self.name}"


_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_REQUIRES = re.compile(r"^--\s*requires-extension:\s*([a-z0-9_]+)\s*$", re.MULTILINE)


MIGRATION_FOLDERS = {"postgresql": "postgres", "sqlite": "sqlite"}  # dialect -> migrations/<folder>


def load_migrations(dialect: str) -> list[Migration]:
    """Return the migrations shipped for a dialect, oldest first."""
    folder = resources.files("database_service") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            sql = entry.read_text(encoding="utf-8")
            requires = _REQUIRES.search(sql)
            found.append(Migration(int(match[1]), match[2], sql, requires[1] if requires else None))
    return sorted(found, key=lambda m: m.version)


def us_to_datetime(us: int) -> datetime:
    """Convert UTC epoch microseconds to an aware datetime, exactly."""
    return EPOCH + timedelta(microseconds=us)


def datetime_to_us(value: datetime) -> int:
    """Convert an aware datetime to UTC epoch microseconds, exactly."""
    return (value - EPOCH) // ONE_MICROSECOND


def us_to_iso(us: int | None) -> str | None:
    """Format epoch microseconds as ISO 8601 UTC with a Z suffix."""
    if us is None:
        return None
    text = us_to_datetime(us).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


class Storage(ABC):
    """What the routes need from a database; one implementation per backend."""

    dialect: str = ""
    schema_ready: bool = False
    migrates: bool = True  # MIGRATE_ON_START: False means a request only ever checks the schema
    _checked_at: float = -math.inf
    _pending_seen: tuple[str, ...] = ()  # what the last check found

    def ensure_schema(self) -> None:
        """Make the schema current once: migrate if this service migrates, else check it."""
        if self.schema_ready:
            return
        if self.migrates:  # e.g. the database was down when the service started
            self.migrate()
            self.schema_ready = True
        else:
            self.check_schema()

    def check_schema(self) -> None:
        """Raise SchemaPending while a required migration is not applied; never migrates.

        A pending answer is kept for 2 s, so requests during a rollout cost no query each.
        """
        if self.schema_ready:
            return
        now = time.monotonic()
        if now - self._checked_at >= 2.0:
            self._pending_seen = tuple(self.pending_migrations())
            self._checked_at = now
        if self._pending_seen:
            raise SchemaPending(self._pending_seen)
        self.schema_ready = True

    def pending_migrations(self) -> list[str]:
        """Labels of the required migrations not applied (an optional one never blocks)."""
        applied = set(self.applied_migrations())
        required = [m for m in load_migrations(MIGRATION_FOLDERS[self.dialect]) if m.requires_extension is None]
        return [m.label for m in required if m.label not in applied]

    @property
    @abstractmethod
    def backend(self) -> str:
        """Name reported by /stats: sqlite, postgresql or timescaledb."""

    @abstractmethod
    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied now."""

    @abstractmethod
    def applied_migrations(self) -> list[str]:
        """Names of the migrations recorded in schema_migrations (none before the first)."""

    @abstractmethod
    def save_signals(
        self, signals: Sequence[NewSignal], check_known: KnownCheck | None = None, full: bool = True
    ) -> list[tuple[dict[str, Any], bool]]:
        """Store signals in one transaction; return each stored signal and whether it is new.

        `check_known` sees the stored rows of known client_ids before the commit (see KnownCheck).
        `full` False: only the ids are wanted (Prefer: return=minimal), so a backend may answer
        a new row by `{"id": ...}` alone when that saves it work; known rows are always whole.
        """

    @abstractmethod
    def get_signal(self, signal_id: int) -> dict[str, Any] | None:
        """Return one signal or None."""

    @abstractmethod
    def signal_history(
        self, filters: SignalFilter, after: tuple[int, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first by (timestamp, id), strictly after the keyset position `after`."""

    @abstractmethod
    def save_trade(self, trade: NewTrade, check_known: KnownCheck | None = None) -> tuple[dict[str, Any], bool]:
        """Store one trade; return the stored trade and whether it is new (`check_known`: as above)."""

    @abstractmethod
    def trade_history(
        self, filters: TradeFilter, after: tuple[int, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """Latest exit first by (exit_time, id), strictly after the keyset position `after`."""

    @abstractmethod
    def trade_stats(self, filters: TradeFilter, group_by: str | None) -> list[StatsAggregate]:
        """Aggregate closed trades in the database, one row per group."""

    @abstractmethod
    def stats_version(self) -> int:
        """A number raised by every new trade (and by rebuild_summaries): the statistics cache key."""

    def versioned_trade_stats(
        self, filters: TradeFilter, group_by: str | None
    ) -> tuple[int | None, list[StatsAggregate]]:
        """`trade_stats` and the statistics version they reflect, None if a trade landed meanwhile.

        The version is read before and after: equal, the statistics are exactly those of
        that version (a trade raises it in its own transaction), even on a lagging standby.
        """
        before = self.stats_version()
        rows = self.trade_stats(filters, group_by)
        return (before if self.stats_version() == before else None), rows

    @abstractmethod
    def rebuild_summaries(self) -> None:
        """Recompute pre-aggregated statistics from the trades and raise the statistics version."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of stored signals and trades."""

    @abstractmethod
    def ping(self) -> None:
        """Raise StorageUnavailable when the database does not answer."""

    @abstractmethod
    def close(self) -> None:
        """Release every connection; safe to call twice."""


GROUP_COLUMNS = {"strategy": "strategy", "symbol": "symbol"}
