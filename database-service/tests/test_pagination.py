"""Keyset pagination: 2,500 signals in pages of 100, while new signals keep arriving."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

pytestmark = [pytest.mark.api, pytest.mark.database, pytest.mark.slow]

BASE_MS = 1_795_514_400_000  # 2026-11-24T10:00:00Z


def _batch(start: int, count: int, tag: str) -> list[dict[str, Any]]:
    # Ten signals share each timestamp, so ties (broken by id) are crossed by page edges.
    return [
        {
            "symbol": "BTCUSDT",
            "action": "BUY",
            "price": 1 + i,
            "strategy": tag,
            "timestamp": BASE_MS + (start + i) // 10 * 1000,
        }
        for i in range(count)
    ]


def _writer(app: Flask, stop: threading.Event, written: list[int]) -> None:
    """Insert signals newer than all, and inside the range already walked or not yet walked."""
    client = app.test_client()
    step = 0
    while not stop.is_set() and step < 60:
        inside = {
            "symbol": "BTCUSDT",
            "action": "SELL",
            "price": 2,
            "strategy": "late",
            "timestamp": BASE_MS + (step * 37 % 250) * 1000,
        }
        newest = {"symbol": "BTCUSDT", "action": "SELL", "price": 3, "strategy": "late"}
        response = client.post("/signals/save", json=[inside, newest])
        written.extend(s["id"] for s in response.get_json()["signals"])
        step += 1


def test_walk_2500_signals_no_duplicate_no_gap(make_app: Any) -> None:
    app = make_app(RATE_LIMIT_ENABLED=False)
    client: FlaskClient = app.test_client()
    originals: set[int] = set()
    for start in range(0, 2500, 1000):
        body = client.post("/signals/save", json=_batch(start, min(1000, 2500 - start), "old")).get_json()
        originals.update(s["id"] for s in body["signals"])
    assert len(originals) == 2500

    stop, written = threading.Event(), []
    writer = threading.Thread(target=_writer, args=(app, stop, written))
    writer.start()
    try:
        seen = _walk(client)
    finally:
        stop.set()
        writer.join()

    ids = [s["id"] for s in seen]
    assert len(ids) == len(set(ids)), "a signal appeared twice"
    assert originals <= set(ids), "a signal that existed before the walk was skipped"
    keys = [(s["timestamp"], s["id"]) for s in seen]
    assert keys == sorted(keys, reverse=True), "not newest first"
    assert written, "the writer never ran during the walk"


def _walk(client: FlaskClient) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    params: dict[str, str] = {"symbol": "BTCUSDT", "limit": "100"}
    for _ in range(100):
        response = client.get("/signals/history", query_string=params)
        assert response.status_code == 200
        page = response.get_json()
        assert page["count"] <= 100
        seen.extend(page["signals"])
        if page["next_cursor"] is None:
            return seen
        params["cursor"] = page["next_cursor"]
    raise AssertionError("pagination did not end")
