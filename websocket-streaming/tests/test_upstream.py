"""Pieces of the upstream manager that need no connection: pacing and what /health says."""

from __future__ import annotations

import socket

import pytest
import websocket
from websocket_streaming.backoff import AttemptWindow
from websocket_streaming.binance.errors import ended_by_close, ended_by_error
from websocket_streaming.binance.streams import host_of, stream_count

from shared.secrets import strip_url_credentials

pytestmark = pytest.mark.unit


def test_spacing_is_zero_until_half_the_budget_is_used_then_spreads_attempts() -> None:
    now = [0.0]
    window = AttemptWindow(limit=300, window=300.0, clock=lambda: now[0])
    for _ in range(149):
        assert window.spacing() == 0
        window.record()
        now[0] += 0.1
    window.record()  # the 150th: half the budget
    assert window.spacing() == pytest.approx(2.0)
    now[0] += 0.5
    assert window.spacing() == pytest.approx(1.5)
    now[0] = 300.0  # the first attempts leave the window
    assert window.spacing() == 0


def test_spacing_alone_never_fills_the_window() -> None:
    now = [0.0]
    window = AttemptWindow(limit=300, window=300.0, clock=lambda: now[0])
    for _ in range(3000):  # a feed that drops right after every connect, for 50 minutes
        now[0] += max(0.01, window.spacing())
        assert window.wait_time() == 0
        window.record()


def test_host_never_carries_credentials() -> None:
    assert host_of("wss://user:secret@stream.binance.com:9443/stream?streams=a") == "stream.binance.com:9443"
    assert host_of("wss://stream.binance.com/stream") == "stream.binance.com:443"
    assert host_of("ws://127.0.0.1/ws") == "127.0.0.1:80"
    assert (
        strip_url_credentials("failed: wss://user:secret@proxy.example:8443/x")
        == "failed: wss://proxy.example:8443/x"
    )


def test_stream_count_reads_the_combined_stream_url() -> None:
    assert stream_count("wss://h:9443/stream?streams=btcusdt@aggTrade/btcusdt@ticker/ethusdt@trade") == 3


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            websocket.WebSocketBadStatusException("x", 429, "Too Many", {"Retry-After": "7"}),
            "HTTP 429 at handshake (Retry-After 7 s)",
        ),
        (websocket.WebSocketBadStatusException("x", 503, "Unavailable", {}), "HTTP 503 at handshake"),
        (ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        (TimeoutError("timed out"), "timed out"),
        (websocket.WebSocketConnectionClosedException("gone"), "connection cut without a close frame"),
        (OSError("proxy wss://u:pw@proxy:1 failed"), "OSError: proxy wss://proxy:1 failed"),
    ],
)
def test_connection_errors_read_as_short_reasons(exc: BaseException, text: str) -> None:
    assert ended_by_error(exc).text == text


def test_an_unresolvable_host_is_flagged_and_retry_after_is_kept() -> None:
    gai = websocket.WebSocketAddressException(socket.gaierror(-2, "Name or service not known"))
    assert ended_by_error(gai).unresolved
    limited = ended_by_error(websocket.WebSocketBadStatusException("x", 418, "teapot", {"retry-after": "120"}))
    assert limited.retry_after == 120
    assert not limited.unresolved


def test_close_frames_give_their_code() -> None:
    ended = ended_by_close((1008).to_bytes(2, "big") + b"Too many requests")
    assert (ended.code, ended.text) == (1008, "close 1008 Too many requests")
    assert ended_by_close(b"").code is None
