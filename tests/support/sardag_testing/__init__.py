"""Helpers for the services' test suites (imported by tests only, never by app code)."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

T = TypeVar("T")


def in_ci() -> bool:
    """True when running under CI (CI=true)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_server(what: str, reason: str) -> None:
    """Skip the test because a server it needs is missing; under CI=true, fail it."""
    message = f"{what} unavailable: {reason}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: integration servers are required)")
    pytest.skip(message)


def wait_until(
    check: Callable[[], T], timeout: float = 3.0, what: str = "condition", interval: float = 0.02
) -> T:
    """Poll `check` until it returns something truthy (returned); fail the test after `timeout` s.

    The first polls come quickly (1 ms, doubling up to `interval`): most conditions hold
    within a few milliseconds, and hundreds of tests wait for one.
    """
    deadline = time.monotonic() + timeout
    pause = min(0.001, interval)
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, interval)


@contextmanager
def repeating(step: Callable[[], object], interval: float) -> Iterator[None]:
    """Call `step` every `interval` s in a background thread while the `with` block runs."""
    stop = threading.Event()

    def run() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            step()
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True, name="repeating")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


class FakeClock:
    """A clock a test moves by hand (`clock.now += 10`), for code that takes a clock callable."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_postgres(admin_url: str, prefix: str) -> Iterator[str]:
    """Create an empty database on admin_url's server, yield its URL, then drop it."""
    import psycopg2  # lazily: suites without PostgreSQL import this module too

    def admin(statement: str) -> None:
        conn = psycopg2.connect(admin_url, connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# What Python says that a client should never read: pydantic's phrasing, reprs, type names,
# raw regexes (every 4xx message reads like "must be a positive number below 1e15").
PYTHON_IN_MESSAGES = re.compile(
    r"Decimal\(|Input should|String should|List should|Value error|instance of|"
    r"\b(?:str|int|float|dict|list|tuple|NoneType|bool)\b|\^\S*\$|\\x00|Traceback"
)


def python_in_message(body: str, echoed: Iterable[str] = ()) -> list[str]:
    """The pieces of Python (reprs, pydantic phrases, type names, regexes) in an answer's body.

    `echoed` are the client's own words (parameter names and values it sent): an answer may
    quote them back, so they are taken out of the body's decoded strings before it is read.
    """
    try:
        said = "\n".join(json_strings(json.loads(body)))
    except ValueError:
        said = body
    for words in sorted({w for w in echoed if w}, key=len, reverse=True):
        said = said.replace(words, " ")
    return [found.group(0) for found in PYTHON_IN_MESSAGES.finditer(said)]


def json_strings(value: object) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from json_strings(item)
