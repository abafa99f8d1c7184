"""From validated requests to storage rows: defaults and the computed trade fields."""

from __future__ import annotations

import time
from decimal import Decimal, localcontext

from database_service.models import SignalIn, TradeIn
from database_service.storage import NewSignal, NewTrade


def now_us() -> int:
    """The current UTC time in epoch microseconds."""
    return time.time_ns() // 1000


def new_signal(signal: SignalIn, default_us: int) -> NewSignal:
    """A storage row for a validated signal (timestamp defaults to now)."""
    return NewSignal(
        symbol=signal.symbol,
        action=signal.action,
        price=signal.price,
        ts_us=signal.timestamp if signal.timestamp is not None else default_us,
        confidence=None if signal.confidence is None else float(signal.confidence),
        strategy=signal.strategy,
        timeframe=signal.timeframe,
        metadata=signal.metadata,
        client_id=signal.client_id,
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
        symbol=trade.symbol,
        side=trade.side,
        entry_price=trade.entry_price,
        exit_price=trade.exit_price,
        quantity=trade.quantity,
        fees=trade.fees,
        pnl=pnl,
        pnl_percent=float(pnl / notional * 100),
        outcome=outcome(pnl),
        exit_us=exit_us,
        entry_us=trade.entry_time,
        duration_seconds=duration,
        strategy=trade.strategy,
        signal_id=trade.signal_id,
        metadata=trade.metadata,
        client_id=trade.client_id,
    )
