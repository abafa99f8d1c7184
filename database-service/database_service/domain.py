"""From validated requests to storage rows: defaults and the computed trade fields."""

from __future__ import annotations

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


SIGNAL_PASSED = _same_names(SignalIn, NewSignal, "confidence")  # a Decimal in, a double stored
TRADE_PASSED = _same_names(TradeIn, NewTrade)


def new_signal(signal: SignalIn, default_us: int) -> NewSignal:
    """A storage row for a validated signal (timestamp defaults to now)."""
    return NewSignal(
        **{name: getattr(signal, name) for name in SIGNAL_PASSED},
        ts_us=signal.timestamp if signal.timestamp is not None else default_us,
        confidence=None if signal.confidence is None else float(signal.confidence),
    )


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
