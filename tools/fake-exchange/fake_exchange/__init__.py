"""A fake Binance spot exchange (WebSocket streams + REST) for tests, benchmarks and demos.

It keeps a record of every aggregate trade it makes (`Market.record`, trades.py): aggTrade
ids are consecutive per symbol, `GET /api/v3/aggTrades` and `GET /api/v3/klines` answer from
the record, and `drill.TradeFlow` trades whether or not anyone listens.
"""

from __future__ import annotations

from .market import Market, trade_event
from .server import FAULT_KINDS, ClosedConnection, FakeExchange, read_frames

__all__ = ["FAULT_KINDS", "ClosedConnection", "FakeExchange", "Market", "read_frames", "trade_event"]
