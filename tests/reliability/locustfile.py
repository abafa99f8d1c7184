"""Locust load for tests/reliability/test_mixed_load.py: 70 % reads, 30 % writes, SSE subscribers.

Run by the test (`locust -f tests/reliability/locustfile.py --headless ...`), configured by:
LOAD_DB_URL, LOAD_WS_URL (the two services), LOAD_API_USERS (default 20) each sending
LOAD_USER_RATE requests per second (default 5), LOAD_SSE_USERS (default 50) subscribers
reading /stream for the whole run, and LOAD_SUMMARY: a JSON file written at the end with
the SSE subscribers' event counts (Locust's own CSV files hold the request figures).
"""

from __future__ import annotations

import itertools
import json
import os
import random
from typing import Any

import requests
from locust import FastHttpUser, User, constant, constant_throughput, events, task

DB = os.environ.get("LOAD_DB_URL", "http://127.0.0.1:5020")
WS = os.environ.get("LOAD_WS_URL", "http://127.0.0.1:5021")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SSE_EVENTS: dict[int, int] = {}  # subscriber number -> price events received
SSE_REFUSED: dict[int, int] = {}  # status -> subscriptions refused
_numbers = itertools.count()


class ApiUser(FastHttpUser):
    """Reads (weight 7) and writes (weight 3) on both services at a steady rate."""

    fixed_count = int(os.environ.get("LOAD_API_USERS", "20"))
    host = DB
    wait_time = constant_throughput(float(os.environ.get("LOAD_USER_RATE", "5")))

    @task(3)
    def price(self) -> None:
        """GET /price/<symbol> (websocket-streaming)."""
        self.client.get(f"{WS}/price/{random.choice(SYMBOLS)}", name="/price/<symbol>")

    @task(1)
    def prices(self) -> None:
        """GET /prices (websocket-streaming)."""
        self.client.get(f"{WS}/prices", name="/prices")

    @task(2)
    def history(self) -> None:
        """GET /signals/history (database-service)."""
        self.client.get(f"/signals/history?limit=20&symbol={random.choice(SYMBOLS)}", name="/signals/history")

    @task(1)
    def stats(self) -> None:
        """GET /performance/stats (database-service)."""
        self.client.get("/performance/stats?group_by=strategy", name="/performance/stats")

    @task(2)
    def save_signal(self) -> None:
        """POST /signals/save."""
        body = {"symbol": random.choice(SYMBOLS), "action": "BUY", "price": round(random.uniform(1, 1e5), 2)}
        self.client.post("/signals/save", json={**body, "strategy": "load"}, name="/signals/save")

    @task(1)
    def track_trade(self) -> None:
        """POST /performance/track."""
        entry = random.uniform(100, 200)
        body = {
            "symbol": random.choice(SYMBOLS),
            "entry_price": entry,
            "exit_price": entry * random.uniform(0.9, 1.1),
        }
        self.client.post("/performance/track", json={**body, "strategy": "load"}, name="/performance/track")


class SseUser(User):
    """One /stream subscriber that reads price events until the run ends."""

    fixed_count = int(os.environ.get("LOAD_SSE_USERS", "50"))
    wait_time = constant(1)

    def on_start(self) -> None:
        """Take a subscriber number."""
        self.number = next(_numbers)
        SSE_EVENTS[self.number] = 0

    @task
    def subscribe(self) -> None:
        """Open /stream and count its events (outside Locust's request figures: it lasts the run)."""
        with requests.get(f"{WS}/stream", stream=True, timeout=60) as response:
            if response.status_code != 200:
                SSE_REFUSED[response.status_code] = SSE_REFUSED.get(response.status_code, 0) + 1
                return
            for line in response.iter_lines():
                if line.startswith(b"event: price"):
                    SSE_EVENTS[self.number] += 1


@events.quitting.add_listener
def write_summary(environment: Any, **kwargs: Any) -> None:
    """Write the SSE counts for the test to read."""
    path = os.environ.get("LOAD_SUMMARY")
    if path:
        with open(path, "w") as sink:
            json.dump({"sse_events": SSE_EVENTS, "sse_refused": SSE_REFUSED}, sink)
