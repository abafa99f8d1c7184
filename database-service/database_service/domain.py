"""From validated requests to storage rows: defaults and the computed trade fields."""

from __future__ import annotations

import operator
import time
from dataclasses import fields
from decimal import Decimal, localcontext
from typing import Any

from pydantic import BaseModel

from database_service.models import SignalIn, TradeIn
from database_service.storage import NewSignal, NewTrade


def now_us() -> int:
    """The current UTC time in epoch microseconds."""
    return time.time_ns() // 1000


def _same_names(request: type[BaseModel], row: type[Any], *converted: str) -> tuple[str, ...]:
    """The request's fields that the row stores as they are: same name, not `converted`."""
    return tuple(f.name for f in fields(row) if f.name in request.model_fields and f.name not in converted)


TRADE_PASSED = _same_names(TradeIn, NewTrade)
# NewSignal's fields in order, each read from the request field of the same name (ts_us from
# timestamp): a batch builds 1000 rows, and positional arguments cost half of keywords.
_SIGNAL_ORDER = tuple(f.name for f in fields(NewSignal))
_SIGNAL_VALUES = operator.attrgetter(*(name if name != "ts_us" else "timestamp" for name in _SIGNAL_ORDER))
_TS, _PRICE, _CONFIDENCE = (_SIGNAL_ORDER.index(name) for name in ("ts_us", "price", "confidence"))


def new_signal(signal: SignalIn, default_us: int) -> NewSignal:
    """A storage row for a validated signal (timestamp defaults to now, numbers as doubles)."""
    values = list(_SIGNAL_VALUES(signal))
    if values[_TS] is None:
        values[_TS] = default_us
    values[_PRICE] = float(values[_PRICE])  # SignalIn's nearest double, or CoreSignalIn's number as sent
    if values[_CONFIDENCE] is not None:
        # + 0.0: a confidence of -0.0 is stored as 0.0 (IEEE -0.0 + 0.0 is +0.0), whichever
        # path stores it (a COPY would keep the sign a single insert loses).
        values[_CONFIDENCE] = float(values[_CONFIDENCE]) + 0.0
    return NewSignal(*values)


def trade_pnl(side: str, entry: Decimal, exit_: Decimal, quantity: Decimal, fees: Decimal) -> Decimal:
    """LONG: (exit - entry) * qty - fees; SHORT: (entry - exit) * qty - fees; exact."""
    with localcontext() as ctx:
        # Inputs are doubles written with <= 17 digits, prices and quantity >= 1e-18 and
        # fees >= 5e-324: the exact result spans fewer than 400 digits, so nothing is rounded.
        ctx.prec = 400
        move = exit_ - entry if side == "LONG" else entry - exit_
        return move * quantity - fees


def outcome(pnl: Decimal) -> str:
    """win for pnl > 0, loss for pnl < 0, breakeven otherwise."""
    if pnl > 0:
        return "win"
    return "loss" if pnl < 0 else "breakeven"


def new_trade(trade: TradeIn, exit_us: int) -> NewTrade:
    """A storage row with pnl, pnl_percent (of the entry notional), outcome and duration."""
    pnl = trade_pnl(trade.side, trade.entry_price, trade.exit_price, trade.quantity, trade.fees)
    notional = trade.entry_price * trade.quantity
    duration = None if trade.entry_time is None else (exit_us - trade.entry_time) / 1_000_000
    return NewTrade(
        **{name: getattr(trade, name) for name in TRADE_PASSED},
        pnl=pnl,
        pnl_percent=float(pnl / notional * 100),
        outcome=outcome(pnl),
        exit_us=exit_us,
        entry_us=trade.entry_time,
        duration_seconds=duration,
    )
