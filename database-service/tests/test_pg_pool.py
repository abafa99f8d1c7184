"""The PostgreSQL pool against the real server: broken and read-only connections never lent again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from unittest.mock import patch

import psycopg2
import pytest
from database_service.storage import NewSignal, StorageUnavailable
from database_service.storage.pg_pool import Timeouts
from database_service.storage.postgres import PostgresStorage

pytestmark = [pytest.mark.integration, pytest.mark.database]


@pytest.fixture
def storage(pg_empty: str) -> Iterator[PostgresStorage]:
    """A migrated storage with a pool of two."""
    store = PostgresStorage(pg_empty, pool_size=2, timeouts=Timeouts(statement=2, lock=1, request=4))
    store.migrate()
    yield store
    store.close()


def _signal(client_id: str | None = None) -> NewSignal:
    from decimal import Decimal

    return NewSignal("BTCUSDT", "BUY", Decimal(100), 1_700_000_000_000_000, client_id=client_id)


def _backend_pid(storage: PostgresStorage) -> int:
    with storage._statement() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


def test_a_connection_whose_server_turned_read_only_is_discarded(storage: PostgresStorage) -> None:
    pid = _backend_pid(storage)
    with storage._statement() as cur:  # what a demoted primary's sessions see: writes refused
        cur.execute("SET default_transaction_read_only = on")
    with pytest.raises(StorageUnavailable, match="read-only"):
        storage.save_signals([_signal()])
    assert storage.pool._idle == [], "a connection to a read-only server went back to the pool"
    assert storage.save_signals([_signal()])[0][1] is True
    assert _backend_pid(storage) != pid


def test_a_terminated_connection_is_discarded_and_a_read_retried(
    storage: PostgresStorage, pg_empty: str
) -> None:
    storage.save_signals([_signal("kept")])
    pid = _backend_pid(storage)
    admin = psycopg2.connect(pg_empty)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    admin.close()
    # the pooled connection is dead: the read fails on it, then runs on a new one
    assert storage.get_signal(1) is not None
    assert _backend_pid(storage) != pid
    assert all(not p.conn.closed for p in storage.pool._idle)


def _terminate(pg_url: str, pid: int) -> None:
    """End backend `pid` as a server that went away would, and wait until it is gone."""
    admin = psycopg2.connect(pg_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(200):
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            if cur.fetchone() == (0,):
                break
            time.sleep(0.01)
    admin.close()


def test_a_write_never_goes_out_on_a_connection_whose_server_closed_it_while_idle(
    storage: PostgresStorage, pg_empty: str
) -> None:
    # What a restarted or failed-over server leaves in every pool: idle connections it has
    # already closed. Sending a write on one would fail it (503) though nothing was sent.
    pid = _backend_pid(storage)
    _terminate(pg_empty, pid)
    assert storage.save_signals([_signal("once")])[0][1] is True
    assert _backend_pid(storage) != pid
    assert storage.counts()["signals"] == 1


def test_a_write_whose_connection_dies_under_it_answers_unavailable_and_is_not_retried(
    storage: PostgresStorage, pg_empty: str
) -> None:
    pid = _backend_pid(storage)
    lent = storage.pool._idle[-1]
    storage.pool._idle.clear()
    _terminate(pg_empty, pid)
    storage.pool._idle.append(lent)  # as if it had been lent just before its server went away
    with (
        patch("database_service.storage.pg_pool._closed_by_server", return_value=False),
        pytest.raises(StorageUnavailable),
    ):
        storage.save_signals([_signal("once")])
    assert storage.counts()["signals"] == 0  # the caller retries with its client_id, not the storage
    assert storage.save_signals([_signal("once")])[0][1] is True
