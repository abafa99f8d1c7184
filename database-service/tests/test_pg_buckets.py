"""PostgreSQL statistics from hourly buckets equal the direct window-function query."""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal

import pytest
from database_service.domain import new_trade
from database_service.models import TradeIn
from database_service.storage import StatsAggregate, TradeFilter, open_storage
from database_service.storage.base import us_to_datetime
from database_service.storage.postgres import PostgresStorage
from database_service.storage.sql import aggregate_from_row, stats_query

pytestmark = [pytest.mark.database, pytest.mark.integration, pytest.mark.slow]  # 300 trades to set up

BASE_US = 1_795_514_400_000_000  # 2026-11-24T10:00:00Z
HOUR = 3_600_000_000


@pytest.fixture(scope="module")
def storage(pg_database: str) -> Iterator[PostgresStorage]:
    """Storage on the session database with 300 random trades over 6 hours, out of order."""
    store = open_storage(pg_database)
    assert isinstance(store, PostgresStorage)
    store.migrate()
    with store._cursor() as cur:
        cur.execute("TRUNCATE trades, trade_client_ids, trade_buckets RESTART IDENTITY")
    rng = random.Random(11)
    for _ in range(300):
        body = {
            "symbol": rng.choice(["BTCUSDT", "ETHUSDT"]),
            "entry_price": Decimal(100),
            "exit_price": Decimal(rng.randrange(80, 121)),
            "side": rng.choice(["LONG", "SHORT"]),
            "strategy": rng.choice(["a", "b", None]),
            "exit_time": (BASE_US + rng.randrange(6 * HOUR)) // 1000,  # epoch ms
        }
        trade = TradeIn.model_validate(body)
        assert trade.exit_time is not None
        store.save_trade(new_trade(trade, trade.exit_time))
    yield store
    with store._cursor() as cur:
        cur.execute("TRUNCATE trades, trade_client_ids, trade_buckets RESTART IDENTITY")
    store.close()


def _direct(store: PostgresStorage, filters: TradeFilter, group_by: str | None) -> list[StatsAggregate]:
    query, params = stats_query(filters, group_by, "%s", us_to_datetime, "postgresql")
    with store._cursor() as cur:
        cur.execute(query, params)
        return [aggregate_from_row(row) for row in cur.fetchall()]


FILTERS = [
    TradeFilter(),
    TradeFilter(strategy="a"),
    TradeFilter(symbol="ETHUSDT"),
    TradeFilter(strategy="b", symbol="BTCUSDT"),
    TradeFilter(since_us=BASE_US + HOUR + 123, until_us=BASE_US + 4 * HOUR + 77),
    TradeFilter(since_us=BASE_US + 2 * HOUR),
    TradeFilter(until_us=BASE_US + 3 * HOUR + 1),
    TradeFilter(since_us=BASE_US + HOUR + 5, until_us=BASE_US + HOUR + 999_999_999),
    TradeFilter(symbol="BTCUSDT", since_us=BASE_US + 30 * 60_000_000),
]


@pytest.mark.parametrize("group_by", [None, "strategy", "symbol"])
@pytest.mark.parametrize("filters", FILTERS)
def test_buckets_equal_direct_query(
    storage: PostgresStorage, filters: TradeFilter, group_by: str | None
) -> None:
    fast = storage.trade_stats(filters, group_by)
    slow = _direct(storage, filters, group_by)
    assert len(fast) == len(slow)
    for got, want in zip(fast, slow, strict=True):
        assert got.key == want.key
        assert (got.total, got.wins, got.losses) == (want.total, want.wins, want.losses)
        for name in ("total_pnl", "gross_profit", "gross_loss", "best", "worst", "max_drawdown", "stddev"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1e-9), name


def test_rebuild_gives_the_same_buckets(storage: PostgresStorage) -> None:
    def snapshot() -> list[tuple[object, ...]]:
        with storage._cursor() as cur:
            cur.execute("SELECT * FROM trade_buckets ORDER BY dim, strategy, symbol, bucket")
            return cur.fetchall()

    maintained = snapshot()
    storage.rebuild_summaries()
    assert snapshot() == maintained
    assert len(maintained) > 6  # four dimensions over six hours
