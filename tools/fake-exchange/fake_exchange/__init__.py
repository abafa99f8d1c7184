"""A fake Binance spot exchange (WebSocket streams + REST) for tests, benchmarks and demos."""

from __future__ import annotations

from .market import Market, trade_event
from .server import FAULT_KINDS, ClosedConnection, FakeExchange, read_frames

__all__ = ["FAULT_KINDS", "ClosedConnection", "FakeExchange", "Market", "read_frames", "trade_event"]
