"""Binance's side of ingest: connections, per-line state, error classification, stream URLs."""
