"""Helpers for the services' test suites (imported by tests only, never by app code)."""

from __future__ import annotations

import os
import socket

import pytest


def in_ci() -> bool:
    """True when running under CI (CI=true)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_server(what: str, reason: str) -> None:
    """Skip the test because a server it needs is missing; under CI=true, fail it."""
    message = f"{what} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: integration servers are required)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
