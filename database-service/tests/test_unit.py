"""Unit tests of the pure parts: parsing, cursors, statistics, pnl, migrations files."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from database_service.cursor import BadCursor, decode_cursor, encode_cursor
from database_service.domain import outcome, trade_pnl
from database_service.models import (
    SignalIn,
    SignalOut,
    TradeIn,
    TradeOut,
    parse_query_timestamp,
    parse_timestamp,
)
from database_service.parsing import details
from database_service.stats import empty, finalize, sqn
from database_service.storage import StatsAggregate
from database_service.storage.base import load_migrations, us_to_iso
from database_service.storage.rows import SIGNALS, TRADES, Table
from database_service.storage.sql import sample_stddev
from pydantic import BaseModel, ValidationError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-24T10:00:00Z", 1795514400_000000),
        ("2026-11-24T12:00:00+02:00", 1795514400_000000),
        ("2026-11-24T10:00:00.123456Z", 1795514400_123456),
        ("2026-11-24t10:00:00z", 1795514400_000000),
        ("1970-01-01T00:00:00+01:00", -3600_000000),
        (1795514400123, 1795514400_123000),
        (Decimal("1795514400123.5"), 1795514400_123500),
    ],
)
def test_timestamps_become_utc_microseconds(value: object, expected: int) -> None:
    assert parse_timestamp(value) == expected


def test_a_query_string_number_is_epoch_milliseconds() -> None:
    assert parse_query_timestamp("1795514400123") == 1795514400_123000
    assert parse_query_timestamp("1.5e3") == 1_500_000
    with pytest.raises(ValueError):  # noqa: PT011
        parse_timestamp("1795514400123")  # in a JSON body, epoch milliseconds are a number


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-24T10:00:00",
        "yesterday",
        True,
        -1,
        10**20,
        "9999-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "\uff12\uff10\uff12\uff16-11-24T10:00:00Z",
        None,
    ],
)
def test_bad_timestamps_are_refused(value: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by case
        parse_timestamp(value)


def test_iso_output_is_utc_with_z() -> None:
    assert us_to_iso(1795514400_123456) == "2026-11-24T10:00:00.123456Z"


def test_cursor_round_trip() -> None:
    assert decode_cursor(encode_cursor(1795514400_123456, 42)) == (1795514400_123456, 42)


@pytest.mark.parametrize("cursor", ["", "!!!", "bm9wZQ", "A" * 21, "A" * 23, "A" * 21 + "=", "A" * 22 + "\n"])
def test_bad_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


def test_any_cursor_of_the_documented_shape_is_a_position() -> None:
    assert decode_cursor("A" * 22) == (0, 0)
    ts_us, row_id = decode_cursor("_" * 22)  # (-1, -1)
    assert (ts_us, row_id) == (-1, -1)
    far_future = encode_cursor(2**62, 5)
    assert decode_cursor(far_future)[0] < 2**62  # clamped into what both databases represent


def _aggregate(pnls: list[float]) -> StatsAggregate:
    """What the database computes, done by hand for a list of pnl in exit order."""
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    cumulative, peak, drawdown = 0.0, 0.0, 0.0
    for p in pnls:
        cumulative += p
        peak = max(peak, cumulative)
        drawdown = max(drawdown, peak - cumulative)
    total = sum(pnls)
    sumsq = sum(p * p for p in pnls)
    return StatsAggregate(
        None,
        len(pnls),
        len(wins),
        len(losses),
        total,
        sum(wins),
        sum(losses),
        max(pnls),
        min(pnls),
        sample_stddev(len(pnls), total, sumsq),
        None,
        drawdown,
    )


def test_worked_example() -> None:
    stats = finalize(_aggregate([10, -5, 20, -10, 0]))
    assert stats["win_rate"] == 0.4
    assert stats["profit_factor"] == 2.0
    assert stats["expectancy"] == 3.0
    assert stats["max_drawdown"] == 10
    assert stats["sqn"] == pytest.approx(0.5571, abs=5e-5)
    assert (stats["wins"], stats["losses"], stats["breakeven"]) == (2, 2, 1)


def test_no_trades_gives_nulls_not_errors() -> None:
    stats = empty()
    assert stats["total_trades"] == 0
    assert stats["win_rate"] is None
    assert stats["sqn"] is None
    assert stats["max_drawdown"] == 0


def test_sqn_is_null_for_one_trade_or_no_spread() -> None:
    assert sqn(1, 5.0, None) is None
    assert sqn(3, 15.0, 0.0) is None
    assert sample_stddev(3, 15.0, 75.0) == 0.0
    assert sqn(5, 15.0, math.sqrt(145)) == pytest.approx(0.5571, abs=5e-5)


@pytest.mark.parametrize(
    ("side", "entry", "exit_", "qty", "fees", "pnl"),
    [
        ("LONG", "100", "110", "2", "1", "19"),
        ("SHORT", "100", "90", "2", "1", "19"),
        ("SHORT", "100", "110", "1", "0", "-10"),
        ("LONG", "0.1", "0.3", "3", "0.6", "0.0"),
    ],
)
def test_pnl_is_exact(side: str, entry: str, exit_: str, qty: str, fees: str, pnl: str) -> None:
    result = trade_pnl(side, Decimal(entry), Decimal(exit_), Decimal(qty), Decimal(fees))
    assert result == Decimal(pnl)


def test_outcome_from_pnl_sign() -> None:
    assert [outcome(Decimal(v)) for v in ("1", "-1", "0")] == ["win", "loss", "breakeven"]


def test_errors_name_the_field_without_echoing_input() -> None:
    with pytest.raises(ValidationError) as caught:
        SignalIn.model_validate({"symbol": "x" * 10_000, "action": "BUY", "price": Decimal(0)})
    found = details(caught.value)
    assert {d["field"] for d in found} == {"symbol", "price"}
    assert all(len(d["message"]) < 200 for d in found)


def test_migrations_are_versioned_per_backend() -> None:
    sqlite = load_migrations("sqlite")
    postgres = load_migrations("postgres")
    assert [m.version for m in sqlite] == [1, 2]
    assert [m.version for m in postgres] == [1, 2, 3, 4, 5]
    assert postgres[1].requires_extension == "timescaledb"
    assert postgres[0].requires_extension is None


@pytest.mark.parametrize(
    ("table", "answer", "sent"),
    [(SIGNALS, SignalOut, SignalIn), (TRADES, TradeOut, TradeIn)],
    ids=["signals", "trades"],
)
def test_the_answer_models_follow_the_declared_row(
    table: Table, answer: type[BaseModel], sent: type[BaseModel]
) -> None:
    """storage/rows.py declares each row once: the documented answer lists its fields in its
    order, and every field a request sends is stored (none silently dropped)."""
    assert tuple(answer.model_fields) == table.answer_fields
    assert set(sent.model_fields) <= set(table.answer_fields)
