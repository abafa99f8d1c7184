"""Locust SSE subscribers for tests/ops/test_desk_targets.py, through the load balancer.

Run by the test (`locust -f tests/ops/desk/sse_locust.py --headless -u N ...`), configured by
DESK_WS_URL (nginx's websocket-streaming port) and DESK_SSE_SUMMARY (a JSON file written at
the end). Each subscriber reads /stream for the whole run and resumes with Last-Event-ID
whenever its stream ends, as an EventSource does. It records every event's arrival time,
id and staleness, so the test can count duplicates, stale prices and reconnects.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import requests
from locust import User, constant, events, task

WS = os.environ.get("DESK_WS_URL", "http://127.0.0.1:5021")
_numbers = itertools.count()
RECORDS: dict[int, dict[str, Any]] = {}


class Subscriber(User):
    """One EventSource-like subscriber: /stream, resumed with Last-Event-ID after any end."""

    wait_time = constant(0.5)

    def on_start(self) -> None:
        """Take a subscriber number and an empty record."""
        self.number = next(_numbers)
        self.last_id: str | None = None
        RECORDS[self.number] = {"events": [], "opens": 0, "refused": {}, "errors": []}

    @task
    def subscribe(self) -> None:
        """Read one stream until it ends; the next task run resumes it."""
        record = RECORDS[self.number]
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        record["opens"] += 1
        try:
            with requests.get(f"{WS}/stream", headers=headers, stream=True, timeout=(5, 30)) as response:
                if response.status_code != 200:
                    refused = record["refused"]
                    refused[str(response.status_code)] = refused.get(str(response.status_code), 0) + 1
                    return
                self._read(response, record)
        except requests.RequestException as exc:
            record["errors"].append([time.time(), type(exc).__name__])

    def _read(self, response: requests.Response, record: dict[str, Any]) -> None:
        """Each blank line ends an event; one with data is a price (a heartbeat only moves the id)."""
        event_id, data = None, None
        for line in response.iter_lines():
            if line.startswith(b"id: "):
                event_id = line[4:].decode()
            elif line.startswith(b"data: "):
                data = json.loads(line[6:])
            elif not line:
                if data is not None:
                    record["events"].append(
                        [time.time(), event_id, data.get("symbol"), bool(data.get("stale"))]
                    )
                self.last_id = event_id or self.last_id
                event_id, data = None, None


@events.quitting.add_listener
def write_summary(environment: Any, **kwargs: Any) -> None:
    """Write every subscriber's record for the test to read."""
    path = os.environ.get("DESK_SSE_SUMMARY")
    if path:
        with open(path, "w") as sink:
            json.dump(RECORDS, sink)
