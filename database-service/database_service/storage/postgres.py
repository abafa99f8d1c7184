"""PostgreSQL backend (psycopg2 connection pool), with TimescaleDB hypertables when available."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import datetime
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2.extras import Json, execute_values

from database_service.storage import pg_migrations, pg_stats, sql
from database_service.storage.base import (
    KnownCheck,
    NewSignal,
    NewTrade,
    SignalFilter,
    StatsAggregate,
    Storage,
    StorageUnavailable,
    TradeFilter,
    check_known_rows,
    datetime_to_us,
    one_line,
    us_to_datetime,
    us_to_iso,
)
from database_service.storage.pg_pool import UNAVAILABLE_ERRORS, ConnectionLost, Pool, Timeouts, connect_params
from database_service.storage.rows import SIGNALS, TRADES, SqlType, Table
from shared import tracing
from shared.secrets import mask_url_secrets

T = TypeVar("T")

BUCKET_LOCK_SPACE = 0x5A42  # two-int advisory locks (space, hour number) guard bucket refreshes

Row = NewSignal | NewTrade
OnInsert = Callable[[psycopg2.extensions.cursor], None]
# Inserts (id, row) pairs; returns the answers by id (created: created_at as ISO text; full:
# False when only the ids are asked for, Prefer: return=minimal)
Inserter = Callable[
    [psycopg2.extensions.cursor, Table, list[tuple[int, Row]], str | None, bool], dict[int, dict[str, Any]]
]


def _iso(value: Any) -> str | None:
    return None if value is None else us_to_iso(datetime_to_us(value))


def _json(value: dict[str, Any] | None) -> Json | None:
    return None if value is None else Json(value)


# psycopg2 adapts Decimal and datetime itself and decodes jsonb into dicts.
CODEC = sql.Codec(
    placeholder="%s",
    store_time=us_to_datetime,
    store_number=sql.identity,
    store_json=_json,
    read_time=_iso,
    read_json=sql.identity,
)


class PostgresStorage(sql.SqlReads, Storage):
    """Storage on PostgreSQL through a thread-safe pool (pg_pool), connecting on first use.

    `url` may name several hosts (libpq multi-host); with `target_session_attrs=read-write`
    libpq connects to whichever is the primary. Every write carries its deadline in the
    server's clock, so a write the client stopped waiting for never commits later.
    """

    codec = CODEC

    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 8, timeouts: Timeouts | None = None) -> None:
        self.url = url
        self.timeouts = timeouts or Timeouts()
        self.params = connect_params(url, self.timeouts)
        self.pool = Pool(self.params, pool_size, self.timeouts, lambda text: mask_url_secrets(text, url))
        self._backend: str | None = None
        self._closed = False
        self._retrying = threading.local()  # set while a read is retried: it gets a new connection

    @property
    def backend(self) -> str:
        """postgresql, or timescaledb when the extension is installed in this database."""
        if self._backend is None:
            with self._statement() as cur:
                cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
                self._backend = "timescaledb" if cur.fetchone() else "postgresql"
        return self._backend

    @contextmanager
    def _cursor(
        self, autocommit: bool = False, first: tuple[str, tuple[Any, ...]] | None = None
    ) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction on a pooled connection: commit on success, rollback on error.

        `autocommit`: for ONE statement, committed by the server on its own. A transaction
        costs a BEGIN and a COMMIT round trip more; a single statement is atomic by itself,
        so under autocommit the same work takes one round trip, with the same durability
        (the server answers only after the commit). Never run two writes that way.
        `first`: the transaction's first statement and its parameters, sent with the BEGIN
        in one round trip (its result is the cursor's).
        """
        with self._leased() as (cur, deadline):
            if autocommit:
                yield cur
                return
            if first is None:
                cur.execute("BEGIN")
            else:
                cur.execute(f"BEGIN; {first[0]}", first[1])
            yield cur
            # Checked by the server right before it commits: past the deadline the client
            # may have given up (503), so the transaction must not commit.
            cur.execute(f"{GUARD}; COMMIT", (deadline,))

    @contextmanager
    def _leased(self) -> Iterator[tuple[psycopg2.extensions.cursor, datetime]]:
        """A cursor (autocommit) and the lease's deadline on the server's clock, for GUARD."""
        if self._closed:
            raise StorageUnavailable("storage is closed")
        fresh = getattr(self._retrying, "active", False)
        with self.pool.lease(fresh) as lease, lease.conn.cursor() as cur:
            yield cur, lease.server_deadline()

    def _statement(self) -> AbstractContextManager[psycopg2.extensions.cursor]:
        """A cursor for one statement under autocommit (see `_cursor`)."""
        return self._cursor(autocommit=True)

    def _read(self, method: Callable[..., T], *args: Any) -> T:
        """Run a read; once more on a new connection if the pooled one had lost its server."""
        try:
            return method(*args)
        except ConnectionLost:
            self._retrying.active = True
            try:
                return method(*args)
            finally:
                self._retrying.active = False

    def get_signal(self, signal_id: int) -> dict[str, Any] | None:
        """One signal or None (retried once on a lost connection)."""
        return self._read(super().get_signal, signal_id)

    def signal_history(
        self, filters: SignalFilter, after: tuple[int, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """A history page (retried once on a lost connection)."""
        return self._read(super().signal_history, filters, after, limit)

    def trade_history(
        self, filters: TradeFilter, after: tuple[int, int] | None, limit: int
    ) -> list[dict[str, Any]]:
        """A page of trades (retried once on a lost connection)."""
        return self._read(super().trade_history, filters, after, limit)

    def migrate(self) -> list[str]:
        """Apply pending migrations (see pg_migrations: optional ones cannot undo the others)."""
        try:
            applied = pg_migrations.apply_pending(self._connect, _after_migrations)
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(self.reason(exc)) from exc
        self._backend = None
        return applied

    def _connect(self) -> psycopg2.extensions.connection:
        """A connection of its own for maintenance (migrations, rebuilds): no statement limits."""
        if self._closed:
            raise StorageUnavailable("storage is closed")
        options = f"{self.params['options']} -c statement_timeout=0 -c lock_timeout=0"
        return psycopg2.connect(psycopg2.extensions.make_dsn(**{**self.params, "options": options}))

    def reason(self, error: BaseException) -> str:
        """Why the database failed, for the log: the driver's message with the password masked."""
        detail = one_line(str(error)) or type(error).__name__
        return f"postgresql: {mask_url_secrets(detail, self.url)}"

    def rebuild_summaries(self) -> None:
        """Recompute every trade bucket from the trades (after a bulk load that bypassed the API)."""
        try:
            with closing(self._connect()) as conn, conn, conn.cursor() as cur:
                _rebuild(cur)
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(self.reason(exc)) from exc

    def applied_migrations(self) -> list[str]:
        """Names recorded in schema_migrations, oldest first (none before the first migration)."""
        with self._statement() as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if cur.fetchone() != (True,):
                return []
            cur.execute("SELECT version, name FROM schema_migrations ORDER BY version")
            return [f"{version:04d}_{name}" for version, name in cur.fetchall()]

    def save_signals(
        self, signals: Sequence[NewSignal], check_known: KnownCheck | None = None, full: bool = True
    ) -> list[tuple[dict[str, Any], bool]]:
        """Insert signals in one transaction; known client_ids return the stored rows."""
        keys = [s.client_id for s in signals]
        if len(signals) == 1 and keys[0] is None:
            return [self._save_unkeyed(SIGNALS, signals[0], None)]
        if len(signals) == 1:
            result = [self._save_one_keyed(signals[0])]
            check_known_rows(check_known, result)  # a known key stored nothing: no transaction to undo
            return result
        if not any(keys):
            return self._save_new(SIGNALS, signals, full)
        return self._save_keyed(SIGNALS, signals, _copy_in, None, check_known, full)

    def _save_new(self, table: Table, items: Sequence[Row], full: bool) -> list[tuple[dict[str, Any], bool]]:
        """Rows without a client_id, all new, in one transaction: BEGIN with the ids, COPY, COMMIT.

        `_save_keyed` without its key bookkeeping (claims, stored rows, orphans, the check):
        the same round trips and answers, less Python per row.
        """
        with self._cursor(first=(_reserve_ids(table), (len(items),))) as cur:
            created, ids = _one_row(cur)
            inserted = _copy_in(cur, table, list(zip(ids, items, strict=True)), _iso(created), full)
        return [(inserted[i], True) for i in ids]

    def _save_one_keyed(self, signal: NewSignal) -> tuple[dict[str, Any], bool]:
        """One signal with a client_id: claim the key and insert in ONE statement (autocommit).

        A new key costs one round trip (it was five: BEGIN, ids, claim, insert, COMMIT). A
        known key inserts nothing; ON CONFLICT waited for the writer that holds it, whose
        statement committed the key and its signal together, so a second statement reads
        the stored signal.
        """
        row = CODEC.params(SIGNALS, signal)
        with self._leased() as (cur, deadline):
            cur.execute(
                f"{GUARD}; {SAVE_ONE_KEYED}", (deadline, signal.client_id, row[SIGNALS.time_index], *row)
            )
            found = cur.fetchone()
        if found is not None:
            return CODEC.answer(SIGNALS, found), True
        with self._statement() as cur:
            stored = _stored_by_key(cur, SIGNALS, [str(signal.client_id)])
        if str(signal.client_id) not in stored:  # its signal was deleted (retention): reclaimed
            return self._save_keyed(SIGNALS, [signal], _copy_in, None, None, True)[0]
        return stored[str(signal.client_id)], False

    def save_trade(self, trade: NewTrade, check_known: KnownCheck | None = None) -> tuple[dict[str, Any], bool]:
        """Insert one trade; a known client_id returns the stored row."""
        on_insert: OnInsert = lambda cur: _on_new_trade(cur, trade)  # noqa: E731
        if trade.client_id is None:
            return self._save_unkeyed(TRADES, trade, on_insert)
        return self._save_keyed(TRADES, [trade], _insert, on_insert, check_known, True)[0]

    def stats_version(self) -> int:
        """The statistics version (raised in every new trade's transaction)."""
        return self._read(self._stats_version)

    def _stats_version(self) -> int:
        with self._statement() as cur:
            cur.execute(sql.READ_STATS_VERSION)
            return int(_one_row(cur)[0])

    def _save_keyed(
        self,
        table: Table,
        items: Sequence[Row],
        insert: Inserter,
        on_insert: OnInsert | None,
        check_known: KnownCheck | None,
        full: bool,
    ) -> list[tuple[dict[str, Any], bool]]:
        """Rows, some with a client_id, in one transaction: a batch through COPY, a trade by INSERT.

        One statement reserves the ids and reads the transaction's now(), which is exactly
        what the created_at default stores; the new keys are claimed with those ids (first
        writer wins), the rows that won or carry no key are inserted with them, and a row
        not inserted answers the stored row that holds its key. Round trips: BEGIN with the
        ids, [keys], insert, [its read-back], [dupes], [orphans], [on_insert], COMMIT.
        """
        keys = [item.client_id for item in items]
        with self._cursor(first=(_reserve_ids(table), (len(items),))) as cur:
            created, ids = _one_row(cur)
            times = [
                None if k is None else us_to_datetime(table.time_us(it))
                for it, k in zip(items, keys, strict=True)
            ]
            won = _claim_keys(cur, table, ids, keys, times)
            fresh = [(ids[i], item) for i, item in enumerate(items) if keys[i] is None or ids[i] in won]
            now = _iso(created)
            inserted = insert(cur, table, fresh, now, full)
            dupes = [k for i, k in enumerate(keys) if k is not None and ids[i] not in won]
            stored = _stored_by_key(cur, table, dupes)
            again = _reclaim_orphans(cur, table, ids, keys, times, {k for k in dupes if k not in stored})
            if again:  # a second occurrence of a reclaimed key answers the row inserted now
                inserted |= insert(
                    cur, table, [(ids[i], it) for i, it in enumerate(items) if ids[i] in again], now, full
                )
                stored = _stored_by_key(cur, table, dupes)
            if inserted and on_insert is not None:
                on_insert(cur)
            # a row not inserted is one whose client_id another row already holds
            results = [
                (inserted[i], True) if i in inserted else (stored[str(k)], False)
                for i, k in zip(ids, keys, strict=True)
            ]
            check_known_rows(check_known, results)  # before COMMIT: raising stores nothing
        return results

    def _save_unkeyed(self, table: Table, item: Row, on_insert: OnInsert | None) -> tuple[dict[str, Any], bool]:
        """One row without an idempotency key: the id comes from the INSERT itself."""
        row = CODEC.params(table, item)
        values = ", ".join(["%s"] * len(row))
        insert = f"INSERT INTO {table.name} ({table.fields}) VALUES ({values}) RETURNING {table.selected}"
        if on_insert is None:  # one INSERT is a transaction by itself: no BEGIN, no COMMIT
            with self._leased() as (cur, deadline):
                cur.execute(f"{GUARD}; {insert}", (deadline, *row))
                returned = _one_row(cur)
        else:
            with self._cursor() as cur:
                cur.execute(insert, row)
                returned = _one_row(cur)
                on_insert(cur)
        return CODEC.answer(table, returned), True

    def trade_stats(self, filters: TradeFilter, group_by: str | None) -> list[StatsAggregate]:
        """Combine hourly bucket segments (and the edge hours' trades) in the database."""
        return self._read(self._trade_stats, filters, group_by)

    def _trade_stats(self, filters: TradeFilter, group_by: str | None) -> list[StatsAggregate]:
        query, params = pg_stats.stats_sql(filters, group_by)
        with self._statement() as cur:
            cur.execute(query, params)
            rows = cur.fetchall()
        return [sql.aggregate_from_row(row) for row in rows]

    def counts(self) -> dict[str, int]:
        """Exact row counts."""
        with self._statement() as cur:
            cur.execute("SELECT (SELECT count(*) FROM signals), (SELECT count(*) FROM trades)")
            signals, trades = _one_row(cur)
        return {"signals": signals, "trades": trades}

    def ping(self) -> None:
        """Run SELECT 1."""
        with self._statement() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    def close(self) -> None:
        """Close the pool and every connection in it."""
        self._closed = True
        self.pool.close()


def _after_migrations(cur: psycopg2.extensions.cursor, applied: list[str]) -> None:
    if "0003_trade_buckets" in applied:
        _rebuild(cur)  # existing trades fill the new buckets


def _rebuild(cur: psycopg2.extensions.cursor) -> None:
    cur.execute("LOCK TABLE trade_buckets IN EXCLUSIVE MODE")
    for statement in pg_stats.rebuild_sql():
        cur.execute(statement)
    cur.execute(sql.BUMP_STATS_VERSION)


def _on_new_trade(cur: psycopg2.extensions.cursor, trade: NewTrade) -> None:
    _refresh_buckets(cur, trade)
    # Row-locks the version until commit: trade saves serialise on it, and a reader that
    # sees the new version also sees the trade.
    cur.execute(sql.BUMP_STATS_VERSION)


def _refresh_buckets(cur: psycopg2.extensions.cursor, trade: NewTrade) -> None:
    """Recompute the four buckets of the trade's exit hour, serialised per hour."""
    hour = pg_stats.bucket_hour(trade.exit_us)
    cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", (BUCKET_LOCK_SPACE, hour // pg_stats.HOUR_US % 2**31))
    for statement, params in pg_stats.refresh_statements(trade.strategy, trade.symbol, hour):
        cur.execute(statement, params)


def _claim_keys(
    cur: psycopg2.extensions.cursor,
    table: Table,
    ids: list[int],
    keys: list[str | None],
    times: list[Any],
) -> set[int]:
    """Insert idempotency keys; return the ids whose key was new (first writer wins)."""
    pairs = sorted((k, ids[i], times[i]) for i, k in enumerate(keys) if k is not None)
    if not pairs:
        return set()
    # Sorted keys mean concurrent batches lock them in the same order: no deadlock.
    rows = execute_values(
        cur,
        f"INSERT INTO {table.keys} (client_id, {table.key_id}, {table.time}) VALUES %s "
        f"ON CONFLICT DO NOTHING RETURNING {table.key_id}",
        pairs,
        page_size=len(pairs),
        fetch=True,
    )
    return {row[0] for row in rows}


def _reserve_ids(table: Table) -> str:
    """One statement: `%s` new ids of `table` and the transaction's now() (created_at's default)."""
    # The sequence is looked up once (an InitPlan), not per row: resolving its name for each
    # of 1000 nextval calls cost the server 2.8 ms of CPU where the whole statement now takes 0.6.
    sequence = f"(SELECT pg_get_serial_sequence('{table.name}', 'id')::regclass)"
    return f"SELECT now(), array(SELECT nextval({sequence}) FROM generate_series(1, %s))"


def _save_one_keyed(table: Table) -> str:
    """Claim a key (client_id, time) and insert its row with the claimed id, in one statement."""
    casts = ", ".join(f"%s::{column.type}" for column in table.columns)
    return (
        f"WITH claimed AS (INSERT INTO {table.keys} (client_id, {table.key_id}, {table.time}) "
        f"VALUES (%s, nextval(pg_get_serial_sequence('{table.name}', 'id')), %s) "
        f"ON CONFLICT DO NOTHING RETURNING {table.key_id}) "
        f"INSERT INTO {table.name} (id, {table.fields}) "
        f"SELECT {table.key_id}, {casts} FROM claimed "
        f"RETURNING {table.selected}"
    )


SAVE_ONE_KEYED = _save_one_keyed(SIGNALS)
# The first statement of every write's commit (see pg_pool): migration 0005_commit_deadline.
GUARD = "SELECT sardag_commit_deadline(%s)"
# COPY's text format: backslash escapes for the column and row separators (NUL is refused
# at validation); \\N is NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def _copy_span_attributes(table: Table, rows: int) -> dict[str, str | int]:
    return {
        "db.system.name": "postgresql",
        "db.operation.name": "COPY",
        "db.collection.name": table.name,
        "db.operation.batch.size": rows,
    }


def _memoised(convert: Callable[[Any], str], values: Sequence[Any]) -> list[str]:
    """`convert` of each value, once per distinct value (a batch repeats strategies and times)."""
    memo = {value: convert(value) for value in set(values) if value is not None}
    memo[None] = NULL
    return list(map(memo.__getitem__, values))


def _escaped(text: str) -> str:
    return text.translate(_COPY_ESCAPES)


def _copy_texts(kind: SqlType, values: Sequence[Any]) -> list[str]:
    """One column of a COPY in its text format, row by row."""
    if kind == "text":
        return _memoised(_escaped, values)
    if kind == "timestamptz":
        return _memoised(lambda us: str(us_to_iso(us)), values)
    if kind == "jsonb":
        return [NULL if value is None else _escaped(json.dumps(value)) for value in values]
    convert = repr if kind == "float8" else str
    if None not in values:  # a required column: every value converted in C
        return list(map(convert, values))
    return [NULL if value is None else convert(value) for value in values]


def _copied_answers(kind: SqlType, values: Sequence[Any], texts: list[str]) -> list[Any]:
    """One column of a COPY as a read would answer it, from the values sent (jsonb: read back)."""
    if kind == "text" or kind == "bigint":
        return list(values)
    if kind == "timestamptz":  # the ISO text sent is the answer's
        return [None if value is None else text for value, text in zip(values, texts, strict=True)]
    if kind == "jsonb":  # JSONB reorders keys and rewrites numbers
        return [None] * len(values)
    return [sql.optional_float(value) for value in values]


def _copy_in(
    cur: psycopg2.extensions.cursor, table: Table, rows: list[tuple[int, Row]], created: str | None, full: bool
) -> dict[int, dict[str, Any]]:
    """COPY rows with the given ids into the table; return them as the API does (or ids only), by id.

    COPY is the database's own bulk path: an INSERT of 1000 rows costs the server about
    three times a COPY of them (row by row through the executor, a 1000-row statement to
    parse) and psycopg2 as much again to adapt them.
    """
    if not rows:
        return {}
    ids = [row_id for row_id, _ in rows]
    columns = list(zip(*map(table.values, [item for _, item in rows]), strict=True))
    texts = [_copy_texts(c.type, values) for c, values in zip(table.columns, columns, strict=True)]
    lines = "\n".join(map("\t".join, zip(map(str, ids), *texts, strict=True))) + "\n"
    # psycopg2's instrumentation does not see copy_expert: its own span, and the comment.
    with tracing.span(
        f"COPY {table.name}", kind="client", attributes=_copy_span_attributes(table, len(rows))
    ) as span:
        copy = f"COPY {table.name} (id, {table.fields}) FROM STDIN{tracing.sql_comment(span.traceparent)}"
        cur.copy_expert(copy, io.StringIO(lines))
    if not full:
        return {row_id: {"id": row_id} for row_id in ids}
    return _copied(cur, table, ids, columns, texts, created)


def _copied(
    cur: psycopg2.extensions.cursor,
    table: Table,
    ids: list[int],
    columns: list[tuple[Any, ...]],
    texts: list[list[str]],
    created: str | None,
) -> dict[int, dict[str, Any]]:
    """The answers to rows just COPYed in, by id, built from the validated values sent.

    They are what the database stores (numbers are already doubles written shortest, times
    whole microseconds), so the answer equals a read's; only JSON columns are read back: one
    more round trip, for batches that have any.
    """
    answers = [
        _copied_answers(c.type, values, column_texts)
        for c, values, column_texts in zip(table.columns, columns, texts, strict=True)
    ]
    names = table.answer_fields
    answered = {
        row[0]: dict(zip(names, (*row, created), strict=True)) for row in zip(ids, *answers, strict=True)
    }
    _read_back_json(cur, table, answered, columns)
    return answered


def _read_back_json(
    cur: psycopg2.extensions.cursor,
    table: Table,
    answered: dict[int, dict[str, Any]],
    columns: list[tuple[Any, ...]],
) -> None:
    """Fill in the answers' JSON columns as the database stored them (rows with any only)."""
    json_columns = [(i, c) for i, c in enumerate(table.columns) if c.type == "jsonb"]
    ids = list(answered)
    wanted = [ids[r] for r in range(len(ids)) if any(columns[i][r] is not None for i, _ in json_columns)]
    if not wanted:
        return
    selected = ", ".join(c.name for _, c in json_columns)
    cur.execute(f"SELECT id, {selected} FROM {table.name} WHERE id = ANY(%s)", (wanted,))
    for row_id, *values in cur.fetchall():
        answered[row_id].update(zip((c.answer for _, c in json_columns), values, strict=True))


def _insert(
    cur: psycopg2.extensions.cursor, table: Table, rows: list[tuple[int, Row]], created: str | None, full: bool
) -> dict[int, dict[str, Any]]:
    """INSERT ... RETURNING rows with the given ids; the answers as stored (`created`, `full` unused)."""
    if not rows:
        return {}
    returned = execute_values(
        cur,
        f"INSERT INTO {table.name} (id, {table.fields}) VALUES %s RETURNING {table.selected}",
        [(row_id, *CODEC.params(table, item)) for row_id, item in rows],
        page_size=len(rows),
        fetch=True,
    )
    return {row[0]: CODEC.answer(table, row) for row in returned}


def _reclaim_orphans(
    cur: psycopg2.extensions.cursor,
    table: Table,
    ids: list[int],
    keys: list[str | None],
    times: list[Any],
    orphans: set[str],
) -> set[int]:
    """Free the keys whose row is gone (retention deleted it) and claim them again: the ids that won.

    The key outlived its row, so the client's retry is a new write, not a replay; without
    this its stored answer is missing and the whole batch failed.
    """
    if not orphans:
        return set()
    cur.execute(
        f"DELETE FROM {table.keys} k WHERE k.client_id = ANY(%s) AND NOT EXISTS "
        f"(SELECT 1 FROM {table.name} t WHERE t.id = k.{table.key_id} AND t.{table.time} = k.{table.time})",
        (sorted(orphans),),
    )
    return _claim_keys(cur, table, ids, [k if k in orphans else None for k in keys], times)


def _stored_by_key(cur: psycopg2.extensions.cursor, table: Table, keys: list[str]) -> dict[str, dict[str, Any]]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    prefixed = ", ".join(f"t.{name}" for name in table.selected.split(", "))
    cur.execute(
        f"SELECT k.client_id, {prefixed} FROM {table.keys} k JOIN {table.name} t "
        f"ON t.id = k.{table.key_id} AND t.{table.time} = k.{table.time} "
        "WHERE k.client_id = ANY(%s)",
        (wanted,),
    )
    return {row[0]: CODEC.answer(table, row[1:]) for row in cur.fetchall()}


def _one_row(cur: psycopg2.extensions.cursor) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, a counter)."""
    row = cur.fetchone()
    if row is None:
        raise StorageUnavailable("the database answered no row to a single-row query")
    return row
