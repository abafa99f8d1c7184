"""PostgreSQL connections: libpq parameters, a pool that never reuses a broken one, deadlines.

Three things decide how a request fares when PostgreSQL fails, and they live here:
- the libpq parameters every connection gets (connect_timeout, TCP keepalives and
  tcp_user_timeout, statement_timeout and lock_timeout), the URL's own values winning;
- the pool: a connection that failed at the connection level, or whose server turned
  into a read-only standby, is closed, and so is every idle one (they lead to the same
  server), so nothing after a failover runs on a connection to the old primary;
- the deadline of each lease: a watchdog thread shuts the socket of a connection still
  busy at its deadline (a frozen server answers no statement_timeout), and every write
  carries the same deadline in the server's clock, past which the server refuses to
  commit it (`sardag_commit_deadline`). A write the client gave up on cannot commit later.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from database_service import settings
from database_service.storage.base import StorageUnavailable

log = logging.getLogger(__name__)

Connection = psycopg2.extensions.connection

# SQLSTATEs after which the connection, and the server behind it, are not to be used again:
# class 08 (connection exception), the server shutting down or starting up, and a write on a
# server that is (now) a read-only standby.
SERVER_GONE = ("57P01", "57P02", "57P03", "25006")
# What answers 503 (retry later) rather than 500: the server is away, busy or refused in time.
UNAVAILABLE_ERRORS = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.TransactionRollbackError,
    psycopg2.errors.ReadOnlySqlTransaction,
)


@dataclass(frozen=True)
class Timeouts:
    """How long a request waits for PostgreSQL, in seconds (see the DATABASE_* settings)."""

    connect: int = settings.CONNECT_TIMEOUT
    statement: float = settings.STATEMENT_TIMEOUT
    lock: float = settings.LOCK_TIMEOUT
    request: float = settings.REQUEST_TIMEOUT
    keepalives_idle: int = settings.KEEPALIVES_IDLE
    keepalives_interval: int = settings.KEEPALIVES_INTERVAL
    keepalives_count: int = settings.KEEPALIVES_COUNT


def connect_params(url: str, timeouts: Timeouts) -> dict[str, str]:
    """libpq keywords for `url` (multi-host allowed) with the timeouts; the URL's own values win."""
    params: dict[str, str] = dict(psycopg2.extensions.parse_dsn(url))
    defaults = {
        "connect_timeout": str(timeouts.connect),
        "keepalives": "1",
        "keepalives_idle": str(timeouts.keepalives_idle),
        "keepalives_interval": str(timeouts.keepalives_interval),
        "keepalives_count": str(timeouts.keepalives_count),
        # sent data unacknowledged this long: the peer (host or network) is gone
        "tcp_user_timeout": str(_ms(timeouts.request)),
    }
    for key, value in defaults.items():
        params.setdefault(key, value)
    # Options later on the line win, so an `options` of the URL overrides these.
    ours = f"-c statement_timeout={_ms(timeouts.statement)} -c lock_timeout={_ms(timeouts.lock)}"
    params["options"] = f"{ours} {params.get('options', '')}".strip()
    return params


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_gone(error: BaseException) -> bool:
    """Whether `error` means the connection, or the server's role, can no longer be trusted."""
    if isinstance(error, psycopg2.InterfaceError):
        return True
    code = getattr(error, "pgcode", None)
    if code is None:  # no SQLSTATE: libpq lost the connection (or never had one)
        return isinstance(error, psycopg2.OperationalError)
    return code.startswith("08") or code in SERVER_GONE


class ConnectionLost(StorageUnavailable):
    """The connection or its server failed; a read may be retried once on a new connection."""


@dataclass
class Pooled:
    """One open connection and what is known of its server's clock."""

    conn: Connection
    clock_offset: float  # server clock minus ours, rounded down: deadlines err early


@dataclass
class Lease:
    """A connection lent to one storage call, until `deadline` (time.monotonic)."""

    pooled: Pooled
    deadline: float
    cut: bool = False

    @property
    def conn(self) -> Connection:
        """The psycopg2 connection (autocommit: transactions are explicit)."""
        return self.pooled.conn

    def server_deadline(self) -> datetime:
        """The lease's deadline on the server's clock: a write checked after it does not commit."""
        wall = time.time() + (self.deadline - time.monotonic()) + self.pooled.clock_offset
        return datetime.fromtimestamp(wall, UTC)


@dataclass
class Pool:
    """Up to `size` connections to whichever server `params` lead to; waits for a free one."""

    params: dict[str, str]
    size: int
    timeouts: Timeouts
    mask: Callable[[str], str] = str  # hides the password in reasons that reach the log
    _idle: list[Pooled] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _slots: threading.BoundedSemaphore = field(init=False)
    _watchdog: Watchdog = field(init=False)
    _closed: bool = False

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.size)
        self._watchdog = Watchdog()

    @contextmanager
    def lease(self, fresh: bool = False) -> Iterator[Lease]:
        """A connection until the block ends (`fresh`: a new one); closed instead of returned if it failed."""
        deadline = time.monotonic() + self.timeouts.request
        if not self._slots.acquire(timeout=self.timeouts.request):
            raise StorageUnavailable(f"postgresql: no free connection within {self.timeouts.request:g} s")
        try:
            lease = Lease(self._take(fresh), deadline)
            if time.monotonic() >= deadline:  # connecting took the whole budget: send nothing
                self._discard(lease.pooled)
                raise StorageUnavailable("postgresql: connecting took longer than the request timeout")
            yield from self._watched(lease)
        finally:
            self._slots.release()

    def _watched(self, lease: Lease) -> Iterator[Lease]:
        self._watchdog.watch(lease)
        try:
            yield lease
        except psycopg2.Error as exc:
            self._watchdog.forget(lease)
            self._failed(lease, exc)
            if lease.cut or isinstance(exc, UNAVAILABLE_ERRORS):
                raise self._unavailable(lease, exc) from exc
            raise
        except BaseException:
            self._watchdog.forget(lease)
            self._discard(lease.pooled)  # mid-transaction state unknown: never lend it again
            raise
        else:
            self._watchdog.forget(lease)
            if lease.cut:  # cut after its last answer arrived: the socket is shut
                self._discard(lease.pooled)
            else:
                self._give_back(lease.pooled)

    def _failed(self, lease: Lease, exc: psycopg2.Error) -> None:
        if lease.cut or lease.conn.closed or server_gone(exc):
            self._discard(lease.pooled)
            self.discard_idle()
            return
        try:  # the server refused a statement (timeout, lock, conflict): the connection is fine
            if lease.conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                with lease.conn.cursor() as cur:
                    cur.execute("ROLLBACK")
            self._give_back(lease.pooled)
        except psycopg2.Error:
            self._discard(lease.pooled)

    def _unavailable(self, lease: Lease, exc: psycopg2.Error) -> StorageUnavailable:
        if lease.cut:
            return ConnectionLost(f"postgresql: no answer within {self.timeouts.request:g} s")
        kind = ConnectionLost if server_gone(exc) else StorageUnavailable
        return kind(self._reason(exc))

    def _reason(self, exc: BaseException) -> str:
        return "postgresql: " + self.mask(" ".join(str(exc).split()) or type(exc).__name__)

    def _take(self, fresh: bool) -> Pooled:
        while not fresh:
            with self._lock:
                if self._closed:
                    raise StorageUnavailable("storage is closed")
                if not self._idle:
                    break
                pooled = self._idle.pop()
            if not _closed_by_server(pooled.conn):
                return pooled
            self._discard(pooled)  # its server went away while it sat idle: never lent again
            self.discard_idle()  # the others lead to the same server
        try:
            return self._open()
        except psycopg2.Error as exc:
            raise ConnectionLost(self._reason(exc)) from exc

    def _open(self) -> Pooled:
        conn = psycopg2.connect(psycopg2.extensions.make_dsn(**self.params))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
                row = cur.fetchone()
                after = time.time()
        except BaseException:
            conn.close()
            raise
        # The server read its clock before `after`: this offset is low by at most the round
        # trip, so a deadline converted with it falls early, never late.
        return Pooled(conn, float(row[0]) - after if row else 0.0)

    def _give_back(self, pooled: Pooled) -> None:
        with self._lock:
            if not self._closed and not pooled.conn.closed:
                self._idle.append(pooled)
                return
        self._discard(pooled)

    @staticmethod
    def _discard(pooled: Pooled) -> None:
        try:
            pooled.conn.close()
        except psycopg2.Error as exc:
            log.debug("closing a failed connection: %s", exc)

    def discard_idle(self) -> None:
        """Close every idle connection (after one failed, the others likely lead to the same server)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for pooled in idle:
            self._discard(pooled)

    def close(self) -> None:
        """Close the idle connections now, and each lent one when it comes back."""
        with self._lock:
            self._closed = True
        self.discard_idle()
        self._watchdog.stop()


def _closed_by_server(conn: Connection) -> bool:
    """Whether an idle connection's server has spoken (closed it, or ended the session).

    An idle session in autocommit, listening to nothing, receives nothing from a live
    server; a readable socket means the server's FIN or its termination message. Used
    before lending, so no write is sent on a connection to a server that went away.
    """
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Watchdog:
    """Shuts the socket of every lease still busy at its deadline (started on first use)."""

    TICK = 0.1  # how late after its deadline a lease may be cut

    def __init__(self) -> None:
        self._by_id: dict[int, Lease] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def watch(self, lease: Lease) -> None:
        """Cut `lease` if it is still watched at its deadline."""
        with self._cond:
            self._by_id[id(lease)] = lease
            # not alive: started before a fork (gunicorn's preload), it did not come along
            if (self._thread is None or not self._thread.is_alive()) and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="pg-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()

    def forget(self, lease: Lease) -> None:
        """`lease` is done: never cut it."""
        with self._cond:
            self._by_id.pop(id(lease), None)

    def stop(self) -> None:
        """End the thread."""
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for lease in [lease for lease in self._by_id.values() if lease.deadline <= now]:
                    self._cut(lease)
                    del self._by_id[id(lease)]
                self._cond.wait(self.TICK if self._by_id else None)

    @staticmethod
    def _cut(lease: Lease) -> None:
        """Shut the socket down: libpq, blocked in poll(), sees the end of the connection at once."""
        lease.cut = True
        try:
            fd = lease.conn.fileno()
            with socket.socket(fileno=os.dup(fd)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg2.Error) as exc:  # already closed: nothing left to cut
            log.debug("cutting a connection past its deadline: %s", exc)
