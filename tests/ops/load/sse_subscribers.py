"""Locust: each user holds one /stream (SSE) connection open, reading events, until the run ends."""

from __future__ import annotations

import requests
from locust import User, constant, task


class Subscriber(User):
    """One EventSource-like client of websocket-streaming."""

    wait_time = constant(0.5)

    @task
    def listen(self) -> None:
        """Open /stream and read it; locust ends the greenlet (and the connection) at stop."""
        with requests.get(f"{self.host}/stream", stream=True, timeout=(5, 60)) as answer:
            answer.raise_for_status()
            for _line in answer.iter_lines():
                pass
