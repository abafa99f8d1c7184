"""Idempotency keys (`client_id`): an identical repeat gets the stored row, a different body a 422.

"Identical" compares what the client sent, as stored: every field of the body by its value
after validation (symbols and actions upper-cased, numbers as the stored double, metadata
as JSON values), omitted optional fields as null and documented defaults (side LONG,
quantity 1, fees 0) as those defaults. Times the server sets when they are omitted
(`timestamp`, `exit_time`) count only when the repeat sends them: a retry sent a second
later without a timestamp is the same request. This follows the IETF Idempotency-Key
draft (a key reused with a different payload is a 422) and Stripe's mismatched-parameter
refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from database_service.models import SignalIn, TradeIn
from database_service.storage import NewSignal, NewTrade
from database_service.storage.base import KnownCheck, datetime_to_us
from database_service.storage.rows import SIGNALS, TRADES, Table
from shared.errors import APIError

CONFLICT = "idempotency_conflict"
IDENTICAL = (
    "A repeat with the same client_id and an identical body answers 200 with the stored row; "
    "a different body answers 422 idempotency_conflict naming the key and the fields that differ "
    "(nothing of the request is stored). Identical means every field equal after validation "
    "(case-insensitive symbol and action, numbers as the stored double, metadata as JSON), an "
    "omitted optional field as null and an omitted default as that default; timestamp and "
    "exit_time, which default to the server's clock, are compared only when the repeat sends them."
)


def signal_fields(signal: SignalIn, new: NewSignal) -> dict[str, Any]:
    """What an identical repeat of `signal` must match in the stored signal."""
    return _expected(SIGNALS, signal, new)


def trade_fields(trade: TradeIn, new: NewTrade) -> dict[str, Any]:
    """What an identical repeat of `trade` must match in the stored trade."""
    return _expected(TRADES, trade, new)


def _expected(table: Table, sent: BaseModel, new: NewSignal | NewTrade) -> dict[str, Any]:
    """Every column the request has a field for (client_id aside), by its answer name, as
    stored; a column the server's clock fills only when the request sent it, last."""
    names = type(sent).model_fields
    compared = [c for c in table.columns if c.answer in names and c.answer != "client_id"]
    fields = {c.answer: getattr(new, c.attr) for c in compared if not c.clock}
    fields.update(
        {c.answer: getattr(new, c.attr) for c in compared if c.clock and getattr(sent, c.answer) is not None}
    )
    return fields


def differences(expected: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """Names of the fields of `expected` whose stored value is another."""
    return [name for name, value in expected.items() if not _same(name, value, stored.get(name))]


_TYPES = {c.answer: c.type for table in (SIGNALS, TRADES) for c in table.columns}  # same name, same type


def _same(name: str, sent: Any, stored: Any) -> bool:
    if sent is None or stored is None:
        return sent is None and stored is None
    if _TYPES[name] == "timestamptz":
        return bool(sent == datetime_to_us(datetime.fromisoformat(str(stored))))
    if _TYPES[name] in ("numeric", "float8"):
        return float(sent) == float(stored)
    return bool(sent == stored)


def conflict_check(kind: str, expected: Callable[[int], dict[str, Any]], batch: bool = False) -> KnownCheck:
    """A storage check raising the 422 when a known client_id's stored row differs from the request.

    `expected(index)`: what item `index` must match (signal_fields, trade_fields), asked only
    for the items whose client_id was already stored.
    """

    def check(known: list[tuple[int, dict[str, Any]]]) -> None:
        details: list[dict[str, str]] = []
        keys: list[str] = []
        for index, stored in known:
            differ = differences(expected(index), stored)
            if differ:
                key = str(stored["client_id"])
                keys.append(f'"{key}"')
                prefix = f"[{index}]." if batch else ""
                message = f"differs from the stored {kind} with client_id {key}"
                details += [{"field": prefix + name, "message": message} for name in differ]
        if details:
            raise APIError(
                CONFLICT,
                f"client_id {', '.join(dict.fromkeys(keys))} already stored with a different body: repeat "
                f"the identical body to get the stored {kind}, or use a new client_id",
                422,
                details,
            )

    return check
