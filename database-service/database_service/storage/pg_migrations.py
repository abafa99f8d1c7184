"""Applying the PostgreSQL migrations: the required ones together, each optional one on its own.

An optional migration (`-- requires-extension: NAME`) can make the server end the session:
`CREATE EXTENSION timescaledb` on a server where the library is installed but not in
`shared_preload_libraries` fails with FATAL, not with an error. Nothing applied before it
may go down with it, so everything before an optional migration is committed first, and a
new session carries on after it. The migration stays pending. Since only a server restart
changes `shared_preload_libraries`, it is not tried again (by any worker or instance) until
the server has restarted: one warning per server start, not a killed session per worker.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field

import psycopg2
import psycopg2.extensions

from database_service.storage.base import Migration, load_migrations, one_line

log = logging.getLogger(__name__)

# Arbitrary constant shared by every process that migrates this database.
MIGRATION_LOCK_KEY = 0x5A4D_4442  # "SMDB"

Connection = psycopg2.extensions.connection
Cursor = psycopg2.extensions.cursor
Connect = Callable[[], Connection]
Finish = Callable[[Cursor, list[str]], None]

BOOKKEEPING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
    "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    # Optional migrations whose session the server ended, and during which server start.
    "CREATE TABLE IF NOT EXISTS schema_migrations_deferred (version integer PRIMARY KEY, "
    "server_started_at timestamptz NOT NULL, reason text NOT NULL)",
)


class Outcome(enum.Enum):
    """What became of one optional migration."""

    APPLIED = "applied"
    SKIPPED = "skipped"
    SESSION_ENDED = "session ended"


@dataclass
class Run:
    """One call of `apply_pending`, over as many sessions as it takes."""

    applied: list[str] = field(default_factory=list)
    given_up: set[int] = field(default_factory=set)
    ended: list[tuple[Migration, str]] = field(default_factory=list)  # recorded by the next session


@dataclass(frozen=True)
class State:
    """What the database says before a pass."""

    done: set[int]
    available: set[str]
    deferred: set[int]  # ended a session since the server last started


def apply_pending(connect: Connect, finish: Finish) -> list[str]:
    """Apply every pending migration under an advisory lock; return those applied now.

    The lock is held by a session of its own, so it outlives a migration session the
    server ends: another process waiting for it finds the migration recorded as deferred.
    `finish(cursor, applied)` runs in the last transaction, once every migration ran.
    """
    run = Run()
    with _migration_lock(connect):
        while True:
            with closing(connect()) as conn:
                cur = conn.cursor()
                for statement in BOOKKEEPING:
                    cur.execute(statement)
                _record_ended(conn, run)  # reconnected: the server is up, it ended the session on purpose
                if _one_pass(conn, _state(cur), run):
                    finish(cur, run.applied)
                    conn.commit()
                    return run.applied


@contextmanager
def _migration_lock(connect: Connect) -> Iterator[None]:
    conn = connect()
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        yield
    finally:
        conn.close()  # ends the session, which releases the lock


def _state(cur: Cursor) -> State:
    cur.execute("SELECT version FROM schema_migrations")
    done = {row[0] for row in cur.fetchall()}
    cur.execute("SELECT name FROM pg_available_extensions")
    available = {row[0] for row in cur.fetchall()}
    cur.execute(
        "SELECT version FROM schema_migrations_deferred WHERE server_started_at = pg_postmaster_start_time()"
    )
    return State(done, available, {row[0] for row in cur.fetchall()})


def _one_pass(conn: Connection, state: State, run: Run) -> bool:
    """Apply what is pending; False when the server ended the session (a new pass follows)."""
    cur = conn.cursor()
    for migration in load_migrations("postgres"):
        if migration.version in state.done or migration.version in run.given_up:
            continue
        if migration.requires_extension is None:
            _run(cur, migration)
            run.applied.append(migration.label)
            continue
        conn.commit()  # what is applied so far stays applied, whatever the optional one does
        outcome = _apply_optional(conn, migration, state, run)
        if outcome is Outcome.APPLIED:
            run.applied.append(migration.label)
            continue
        run.given_up.add(migration.version)
        if outcome is Outcome.SESSION_ENDED:
            return False
    return True


def _run(cur: Cursor, migration: Migration) -> None:
    cur.execute(migration.sql)
    cur.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
    )


def _apply_optional(conn: Connection, migration: Migration, state: State, run: Run) -> Outcome:
    """Run one optional migration in a transaction of its own."""
    extension = migration.requires_extension
    if extension not in state.available:
        log.info("migration %s skipped: extension %s not available", migration.label, extension)
        return Outcome.SKIPPED
    if migration.version in state.deferred:
        log.info(
            "migration %s still pending: it ended the session since PostgreSQL last started "
            "(see schema_migrations_deferred); tried again after a restart",
            migration.label,
        )
        return Outcome.SKIPPED
    try:
        with conn.cursor() as cur:
            _run(cur, migration)
            cur.execute("DELETE FROM schema_migrations_deferred WHERE version = %s", (migration.version,))
        conn.commit()
    except psycopg2.Error as exc:
        if conn.closed:
            run.ended.append((migration, one_line(str(exc))))
            return Outcome.SESSION_ENDED
        conn.rollback()
        log.warning("migration %s skipped: %s", migration.label, one_line(str(exc)))
        return Outcome.SKIPPED
    return Outcome.APPLIED


def _record_ended(conn: Connection, run: Run) -> None:
    """Remember the migrations that ended a session (for this server start) and warn once."""
    with conn.cursor() as cur:
        for migration, reason in run.ended:
            cur.execute(
                "INSERT INTO schema_migrations_deferred (version, server_started_at, reason) "
                "VALUES (%s, pg_postmaster_start_time(), %s) ON CONFLICT (version) DO UPDATE "
                "SET server_started_at = EXCLUDED.server_started_at, reason = EXCLUDED.reason",
                (migration.version, reason),
            )
    conn.commit()
    for migration, reason in run.ended:
        log.warning("%s", preload_hint(migration, reason))
    run.ended.clear()


def preload_hint(migration: Migration, reason: str) -> str:
    """The warning for an optional migration whose session the server ended."""
    extension = migration.requires_extension
    return (
        f"migration {migration.label} not applied: the server ended the session while applying it "
        f"({reason}). The extension {extension} is probably installed but not preloaded: add "
        f"'{extension}' to shared_preload_libraries in postgresql.conf and restart PostgreSQL; the "
        "migration is applied at the first start after that. Until then the service runs on the plain schema."
    )
