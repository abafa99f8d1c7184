"""Kubernetes probes: /livez answers with no feed at all, /readyz waits for a fresh price."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
import requests
from flask import Flask
from websocket_streaming import get_service
from websocket_streaming.fake_exchange import FakeExchange, trade_event

from shared.testing import free_port, wait_until

pytestmark = [pytest.mark.unit, pytest.mark.websocket, pytest.mark.api]


def test_livez_is_200_and_readyz_503_with_no_feed_and_redis_down(make_app: Callable[..., Flask]) -> None:
    app = make_app(connect=False, BINANCE_WS_URL=f"ws://127.0.0.1:{free_port()}", REDIS_URL=None)
    client = app.test_client()
    live = client.get("/livez")
    assert live.status_code == 200
    assert live.get_json()["status"] == "alive"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["price"] == {"status": "down", "detail": "no price yet"}
    assert ready.headers["Retry-After"]


def test_readyz_turns_200_on_the_first_price_and_503_when_it_goes_stale(
    fake: FakeExchange, make_app: Callable[..., Flask]
) -> None:
    app = make_app(PRICE_STALE_SECONDS=0.5)
    client = app.test_client()
    assert client.get("/readyz").status_code == 503
    fake.send(trade_event("BTCUSDT", "100.5", 1), stream="btcusdt@trade")
    wait_until(lambda: client.get("/readyz").status_code == 200, 5.0, "readiness after the first price")
    assert client.get("/readyz").get_json()["checks"]["ingest"]["status"] == "ok"
    time.sleep(0.6)  # longer than PRICE_STALE_SECONDS with nothing sent
    stale = client.get("/readyz")
    assert stale.status_code == 503
    assert "old (limit 0.5 s)" in stale.get_json()["checks"]["price"]["detail"]
    assert client.get("/livez").status_code == 200
    assert get_service(app).running_here()


def test_probes_are_never_rate_limited(make_app: Callable[..., Flask]) -> None:
    client = make_app(connect=False, RATE_LIMIT_DEFAULT=2).test_client()
    for path, status in (("/livez", 200), ("/readyz", 503)):
        assert {client.get(path).status_code for _ in range(5)} == {status}
    assert 429 in {client.get("/symbols").status_code for _ in range(5)}


def test_both_probes_are_in_the_openapi_document(make_app: Callable[..., Flask]) -> None:
    paths = make_app(connect=False).test_client().get("/openapi.json").get_json()["paths"]
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/livez"]["get"]["responses"]) == {"200"}


def subscribers_metric(base: str) -> float:
    """sardag_sse_subscribers as /metrics exposes it (what the HPA's custom metric reads)."""
    text = requests.get(f"{base}/metrics", timeout=5).text
    found = re.search(r'^sardag_sse_subscribers\{service="websocket-streaming"\} (\S+)$', text, re.M)
    assert found, "sardag_sse_subscribers is not exported"
    return float(found.group(1))


def test_sse_subscribers_gauge_counts_open_streams(
    make_app: Callable[..., Flask], serve: Callable[[Flask], str]
) -> None:
    base = serve(make_app(SSE_HEARTBEAT_SECONDS=0.2))
    assert subscribers_metric(base) == 0
    streams = [requests.get(f"{base}/stream", stream=True, timeout=5) for _ in range(3)]
    assert [s.status_code for s in streams] == [200, 200, 200]
    wait_until(lambda: subscribers_metric(base) == 3, 3.0, "three subscribers counted")
    for stream in streams[:2]:
        stream.close()
    # a closed client is noticed at the next heartbeat write
    wait_until(lambda: subscribers_metric(base) == 1, 3.0, "two streams released")
    streams[2].close()
