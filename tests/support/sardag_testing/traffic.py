"""Load a test keeps on a service while it breaks something: looping clients that record everything.

    with Traffic() as traffic:
        traffic.loop("write", lambda client, n: client.post("/signals/save", {...}), db.url, threads=4)
        ...break and repair a server...
    answers = traffic.answers("write")

Every request is recorded with its start time, duration and status (0 when no answer came,
with the error), so a test can look at exactly the answers given during an outage.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """One request's outcome. `status` 0 means no HTTP answer (see `error`)."""

    kind: str
    started: float  # time.monotonic()
    elapsed: float
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: str = ""

    @property
    def ended(self) -> float:
        """When the answer (or the failure) came, on the monotonic clock."""
        return self.started + self.elapsed


class Client:
    """One keep-alive HTTP/1.1 connection to a service (re-opened after a failure; never retries)."""

    def __init__(self, base_url: str, timeout: float = 10.0, kind: str = "request") -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.kind = kind
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        """GET `path`."""
        return self.request("GET", path, None, headers)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Answer:
        """POST `body` as JSON to `path`."""
        return self.request("POST", path, body, headers)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """Send one request and wait for its answer; a failure is an Answer with status 0."""
        data = None if body is None else json.dumps(body).encode()
        sent = {**({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})}
        started = time.monotonic()
        try:
            conn = self._connection()
            conn.request(method, path, data, sent)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return Answer(
                self.kind, started, time.monotonic() - started, 0, error=f"{type(exc).__name__}: {exc}"
            )
        elapsed = time.monotonic() - started
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
        if response.will_close:
            self.close()
        return Answer(
            self.kind, started, elapsed, response.status, answer_headers, _decode(raw, answer_headers)
        )

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        """Close the connection (the next request opens another)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _decode(raw: bytes, headers: dict[str, str]) -> Any:
    if headers.get("content-type", "").startswith("application/json"):
        try:
            return json.loads(raw or b"null")
        except ValueError:
            return raw.decode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


Step = Callable[[Client, int], Answer]


class Traffic:
    """Client threads that repeat a request until stopped, recording every answer."""

    def __init__(self) -> None:
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def loop(
        self, kind: str, step: Step, base_url: str, threads: int = 1, pause: float = 0.0, timeout: float = 10.0
    ) -> None:
        """Start `threads` clients that call `step(client, n)` for n = 0, 1, ... until `stop()`."""
        for number in range(threads):
            client = Client(base_url, timeout, kind)
            worker = threading.Thread(
                target=self._run,
                args=(step, client, number, threads, pause),
                name=f"{kind}-{number}",
                daemon=True,
            )
            self._threads.append(worker)
            worker.start()

    def _run(self, step: Step, client: Client, number: int, stride: int, pause: float) -> None:
        n = number
        try:
            while not self._stop.is_set():
                answer = step(client, n)
                with self._lock:
                    self._answers.append(answer)
                n += stride
                if pause:
                    self._stop.wait(pause)
        finally:
            client.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every client and wait for the requests in flight."""
        self._stop.set()
        for worker in self._threads:
            worker.join(timeout)

    def answers(self, *kinds: str) -> list[Answer]:
        """The answers so far (of `kinds`, or all), in the order they came."""
        with self._lock:
            found = list(self._answers)
        return [a for a in found if not kinds or a.kind in kinds]

    def __enter__(self) -> Traffic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank) of `values`; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def statuses(answers: Iterable[Answer]) -> dict[int, int]:
    """How many answers had each status (0: no answer)."""
    counts: dict[int, int] = {}
    for answer in answers:
        counts[answer.status] = counts.get(answer.status, 0) + 1
    return dict(sorted(counts.items()))


class SlowClients:
    """`count` connections that send a request's head one byte every `interval` s (slowloris).

    They never finish it within a test's time (the head is ~100 bytes). A server that gives
    each of them a thread until the head is complete runs out of threads.
    """

    HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow-client\r\nAccept: */*\r\n\r\n"

    def __init__(self, base_url: str, count: int = 200, interval: float = 1.0) -> None:
        parts = urlsplit(base_url)
        self.address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.count = count
        self.interval = interval
        self.sockets: list[socket.socket] = []
        self.sent = 0  # bytes each connection has sent
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            self.sockets.append(socket.create_connection(self.address, timeout=5))
        self._thread.start()
        return self

    def _drip(self) -> None:
        while not self._stop.is_set() and self.sent < len(self.HEAD) - 1:
            byte = self.HEAD[self.sent : self.sent + 1]
            for sock in list(self.sockets):
                try:
                    sock.sendall(byte)
                except OSError:
                    self.sockets.remove(sock)
                    self.closed_by_server += 1
            self.sent += 1
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.sockets:
            sock.close()
