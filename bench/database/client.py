"""A minimal keep-alive HTTP client for the benchmark (http.client, one connection per thread)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any


class Http:
    """One persistent connection."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=120)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Any]:
        """Send and read one request; return status, decoded JSON and headers."""
        sent = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request(method, path, body=body, headers={**sent, **(headers or {})})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read()), response.headers

    def get(self, path: str) -> tuple[int, Any]:
        """GET returning status and JSON."""
        status, data, _ = self.request("GET", path)
        return status, data


def run_threads(threads: list[threading.Thread]) -> float:
    """Start every thread, wait for all; return the seconds it took."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def concurrent_posts(
    port: int, path: str, bodies: list[Any], clients: int, headers: dict[str, str] | None = None
) -> float:
    """POST every body (pre-encoded) from `clients` threads; return requests per second."""
    encoded = [json.dumps(b).encode() for b in bodies]
    shares = [encoded[i::clients] for i in range(clients)]
    errors: list[int] = []

    def worker(share: list[bytes]) -> None:
        http = Http("127.0.0.1", port)
        for body in share:
            status, _, _ = http.request("POST", path, body, headers)
            if status != 201:
                errors.append(status)

    elapsed = run_threads([threading.Thread(target=worker, args=(share,)) for share in shares])
    if errors:
        raise SystemExit(f"ingest failed: statuses {sorted(set(errors))}")
    return len(bodies) / elapsed


def latencies(port: int, paths: list[str], expect: int | None = None, cache: str | None = None) -> list[float]:
    """Sequential GETs on one connection; seconds per request, checked for sanity."""
    http = Http("127.0.0.1", port)
    http.get("/health")  # warm the connection
    timings = []
    for path in paths:
        started = time.perf_counter()
        status, body, headers = http.request("GET", path)
        timings.append(time.perf_counter() - started)
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {body}")
        if expect is not None and body["count"] != expect:
            raise SystemExit(f"GET {path}: {body['count']} rows, expected {expect}")
        if cache is not None and headers["X-Cache"] != cache:
            raise SystemExit(f"GET {path}: X-Cache {headers['X-Cache']}, expected {cache}")
    return timings
