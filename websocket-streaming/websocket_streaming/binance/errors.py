"""Binance connection errors: why an attempt failed or a connection ended, in short words."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import websocket

from shared.secrets import strip_url_credentials

POLICY_VIOLATION = 1008  # Binance: too many messages from the client; back off


@dataclass(frozen=True)
class Ended:
    """Why a connection attempt failed or a connection ended."""

    text: str
    code: int | None = None  # the close code the server sent
    retry_after: float = 0.0  # the server's Retry-After when it refused the handshake
    unresolved: bool = False  # the host name could not be resolved


def ended_by_error(exc: BaseException) -> Ended:
    """A connection error as a short, credential-free reason."""
    if isinstance(exc, websocket.WebSocketBadStatusException):
        retry = _retry_after(exc.resp_headers)
        hint = f" (Retry-After {retry:g} s)" if retry else ""
        return Ended(f"HTTP {exc.status_code} at handshake{hint}", retry_after=retry)
    if isinstance(exc, websocket.WebSocketAddressException | socket.gaierror):
        return Ended(f"cannot resolve the host: {exc}", unresolved=True)
    if isinstance(exc, ConnectionRefusedError):
        return Ended("connection refused")
    if isinstance(exc, TimeoutError | websocket.WebSocketTimeoutException):
        return Ended("timed out")
    if isinstance(exc, websocket.WebSocketConnectionClosedException | ConnectionResetError):
        return Ended("connection cut without a close frame")
    return Ended(strip_url_credentials(f"{type(exc).__name__}: {exc}")[:200])


def ended_by_close(data: bytes) -> Ended:
    """`close <code> <reason>` from a close frame payload."""
    if len(data) < 2:
        return Ended("close (no code)")
    code = int.from_bytes(data[:2], "big")
    return Ended(f"close {code} {data[2:].decode('utf-8', 'replace')}".strip(), code=code)


def _retry_after(headers: dict[str, str] | None) -> float:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return 0.0
    return 0.0
