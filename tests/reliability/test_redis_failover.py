"""The Redis master SIGKILLed under mixed load on both services (Sentinel stack, 2 workers each).

Must hold: zero 5xx (and no unanswered request) on both services, and no `/price` answered
stale (PRICE_STALE_SECONDS=3) from the kill until 5 s after the promotion. Printed (`-s`):
statuses and latency per kind around the failover, and when the sentinels promoted.
The stack (shared.testing.sentinel) is the one a whole-system load test would take: start
it, hand `stack.url` to every instance as REDIS_URL, and call `kill_master()` /
`wait_failover()` at the moment the scenario injects the Redis failover.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from shared.testing import wait_until
from shared.testing.processes import Launcher, Running
from shared.testing.sentinel import SentinelStack
from shared.testing.traffic import Answer, Client, Traffic, percentile, statuses

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.redis, pytest.mark.api]

STALE_AFTER = "3"
SETTLE = 5.0
UNLIMITED = dict.fromkeys(
    ("RATE_LIMIT_DEFAULT", "RATE_LIMIT_SIGNALS_SAVE", "RATE_LIMIT_SIGNALS_HISTORY", "RATE_LIMIT_PRICE"),
    "1000000",
)


def steps() -> dict[str, tuple[str, Callable[[Client, int], Answer]]]:
    """kind -> (service, step)."""

    def write(client: Client, n: int) -> Answer:
        return client.post("/signals/save", {"symbol": "BTCUSDT", "action": "HOLD", "price": 10 + n % 7})

    return {
        "db-write": ("db", write),
        "db-read": ("db", lambda c, n: c.get("/signals/history?limit=10")),
        "db-stats": ("db", lambda c, n: c.get("/performance/stats")),
        "price": ("ws", lambda c, n: c.get(f"/price/{'BTCUSDT' if n % 2 else 'ETHUSDT'}")),
    }


class StreamReader:
    """One SSE subscriber of /stream, keeping every event's id and data."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        self.events: list[tuple[str | None, dict[str, object]]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.ended_by: BaseException | None = None

    def __enter__(self) -> StreamReader:
        self.conn.request("GET", "/stream?symbols=BTCUSDT,ETHUSDT")
        self.thread.start()
        return self

    def _read(self) -> None:
        try:
            self._lines(self.conn.getresponse())
        except (OSError, http.client.HTTPException, AttributeError) as exc:  # closed by __exit__
            self.ended_by = exc

    def _lines(self, response: http.client.HTTPResponse) -> None:
        event_id: str | None = None
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                self.events.append((event_id, json.loads(line[6:])))

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.thread.join(5)

    def repeated_ids(self) -> int:
        """Events whose `id:` an earlier event had."""
        ids = Counter(i for i, _ in self.events if i is not None)
        return sum(n - 1 for n in ids.values())

    def repeated_updates(self) -> int:
        """Events carrying an exchange update (every field but the local times) sent before."""
        local = {"age_seconds", "stale", "received_at", "quote_age_seconds"}
        updates = Counter(
            json.dumps({k: v for k, v in d.items() if k not in local}, sort_keys=True) for _, d in self.events
        )
        return sum(n - 1 for n in updates.values())


def test_redis_master_killed_under_mixed_load(
    launcher: Launcher, fake_exchange: Running, streaming_settings: Callable[..., dict[str, str]]
) -> None:
    with SentinelStack(password="fail0ver-pw") as stack:
        common = {"REDIS_URL": stack.url, "WS_LEADER_LOCK_TTL_SECONDS": "1.5", **UNLIMITED}
        ws_env = streaming_settings(fake_exchange, PRICE_STALE_SECONDS=STALE_AFTER, **common)
        services = {
            "db": launcher.gunicorn("database-service", workers=2, **common),
            "ws": launcher.gunicorn("websocket-streaming", workers=2, **ws_env),
        }
        wait_until(lambda: Client(services["ws"].url).get("/price/BTCUSDT").status == 200, 30, "a price")
        with Traffic() as traffic, StreamReader(services["ws"].url) as stream:
            for kind, (service, step) in steps().items():
                traffic.loop(kind, step, services[service].url, threads=2 if kind == "price" else 1, pause=0.02)
            time.sleep(2.0)
            killed_at = time.monotonic()
            stack.kill_master()
            promoted_at = stack.wait_failover()
            time.sleep(SETTLE + 2.0)
        answers = traffic.answers()

    window = [a for a in answers if killed_at <= a.started <= promoted_at + SETTLE]
    print(f"\nredis failover: promoted {promoted_at - killed_at:.2f} s after the kill; {len(answers)} requests")
    for kind in sorted({a.kind for a in window}):
        mine = [a for a in window if a.kind == kind]
        times = [a.elapsed * 1000 for a in mine]
        print(f"  {kind}: {statuses(mine)}, p99 {percentile(times, 0.99):.0f} ms, max {max(times):.0f} ms")
    failed = [a for a in answers if a.status >= 500 or a.status == 0]
    prices = [a for a in window if a.kind == "price"]
    stale = [
        a for a in prices if not (a.status == 200 and isinstance(a.body, dict) and a.body["stale"] is False)
    ]
    print(f"  5xx or unanswered: {len(failed)}; /price stale or missing: {len(stale)} of {len(prices)}")
    print(
        f"  SSE: {len(stream.events)} events on one subscriber; {stream.repeated_ids()} repeated ids,"
        f" {stream.repeated_updates()} updates sent twice under different ids"
    )
    assert not failed, f"5xx or unanswered: {statuses(failed)} {failed[:3]}"
    assert prices
    assert not stale, stale[:3]
    assert stream.events
    assert stream.repeated_ids() == 0
    # The same exchange update sent again under another ingester's id (a solo worker handing
    # over to the new leader) would be a duplicate to the subscriber: never.
    assert stream.repeated_updates() == 0
