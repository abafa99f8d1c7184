"""Redis connections with short timeouts, and the circuit breaker shared by its users.

`REDIS_URL` names one server (`redis://`, `rediss://`, `unix://`) or a master watched by
Redis Sentinel, in the form `limits` and Flask-Limiter use:
`redis+sentinel://[:password@]host1:26379,host2:26379/<master>[/db]` (`rediss+sentinel://`
for TLS). The password, TLS and other query options apply to the sentinels and to the
master alike; every connection asks a sentinel for the master's address when it opens, so
each user of Redis follows a failover by itself.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from shared.secrets import mask_url_secrets

if TYPE_CHECKING:
    from flask import Flask

    from shared.metrics import Metrics

# An open breaker lets one call through this often: during an outage one request in that
# time pays the timeout; once Redis is back, /health says so (and requests return to Redis)
# within about this long (the fault suite asks for 5 s, on a loaded machine).
REPROBE_SECONDS = 2.0
# Under Sentinel an outage is usually a failover, over once a replica is promoted (about
# 2 s after the master is lost): probing this often keeps the fail-open window short. A
# probe during a failover fails fast (the sentinels name no master, or the dead one refuses).
SENTINEL_REPROBE_SECONDS = 0.5
FAST_TIMEOUT = 0.05  # seconds: a request never waits longer than this on a sick Redis
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_PORT = 26379
# A pooled connection idle this long gets TCP keepalive probes, so a NAT or firewall that
# drops idle flows keeps this one (and a dead peer is noticed without a request paying).
KEEPALIVE_OPTIONS = {
    name: value
    for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `redis+sentinel://` URL: where the sentinels are and which master to ask for."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    tls: bool
    options: dict[str, Any]  # password, username, TLS and query options: sentinels and master alike


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names a master through Redis Sentinel."""
    return urlsplit(url).scheme in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse `redis+sentinel://[:password@]h1:26379,h2:26379/<master>[/db]` (ValueError, password-free)."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a sentinel URL: use {' or '.join(f'{s}://' for s in SENTINEL_SCHEMES)}")
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = tuple(_sentinel_address(item) for item in hosts.split(","))
    names = [unquote(p) for p in parts.path.split("/")[1:]]
    if not names or not names[0]:
        raise ValueError("no master name: use redis+sentinel://host:26379,.../<master>[/db]")
    if len(names) > 2 or (len(names) == 2 and not names[1].isdigit()):
        raise ValueError(f"path must be /<master>[/db], got {parts.path!r}")
    tls = SENTINEL_SCHEMES[parts.scheme]
    plain = f"{'rediss' if tls else 'redis'}://{parts.netloc.rpartition('@')[0]}@localhost"
    options = parse_url(plain + (f"?{parts.query}" if parts.query else ""))
    for key in ("host", "port", "path", "connection_class"):
        options.pop(key, None)
    db = int(names[1]) if len(names) == 2 else int(options.pop("db", 0))
    options.pop("db", None)
    return SentinelURL(sentinels, names[0], db, tls, options)


def _sentinel_address(item: str) -> tuple[str, int]:
    """`host[:port]` of one sentinel (an IPv6 address in brackets)."""
    item = item.strip()
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port, forbidden = rest.removeprefix(":"), "/?#@ []"
    else:
        (host, _, port), forbidden = item.partition(":"), "/?#@ :[]"
    if not host or any(c in host for c in forbidden):
        raise ValueError(f"bad sentinel host {item!r}: use host:port, separated by commas")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad sentinel port in {item!r}")
    return host, int(port) if port else SENTINEL_PORT


def check_redis_url(url: str) -> None:
    """Raise ValueError (never naming the password) unless `url` is a usable Redis URL."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss") and "," in parts.netloc:
        raise ValueError("several hosts need the Sentinel form: redis+sentinel://h1:26379,h2:26379/<master>")
    try:
        parse_url(url)
    except ValueError as exc:
        raise ValueError(mask_url_secrets(str(exc), url)) from None


def check_sentinels(url: str, timeout: float = 0.5) -> None:
    """Raise ValueError if a sentinel that answers does not know the master, or is no sentinel.

    Silent when no sentinel answers: Redis being away is an outage the services ride out
    (in-process limits and cache), not a configuration error.
    """
    target = parse_sentinel_url(url)
    for host, port in target.sentinels:
        client = redis.Redis(host, port, **_sentinel_kwargs(target, timeout))
        try:
            address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", target.master)
        except redis.ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise ValueError(f"{host}:{port} is a Redis server, not a sentinel") from None
            raise ValueError(f"sentinel {host}:{port} refused the query: {exc}") from None
        except REDIS_ERRORS:
            continue
        finally:
            client.close()
        if address is None:
            raise ValueError(f"sentinel {host}:{port} does not know a master named {target.master!r}")


def _sentinel_kwargs(target: SentinelURL, timeout: float) -> dict[str, Any]:
    """Connection settings for the sentinels themselves: the URL's password and TLS, no db."""
    kwargs = {k: v for k, v in target.options.items() if k != "db"}
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout, ssl=target.tls)
    kwargs["retry"] = Retry(NoBackoff(), 0)  # a sentinel that fails is skipped: the next one is asked
    return kwargs


def redis_client(url: str, timeout: float = FAST_TIMEOUT, **kwargs: Any) -> redis.Redis:
    """A client with bounded timeouts that retries only a connection found dead, once.

    A pooled connection closed while idle (Redis `timeout`, a NAT, a failover) fails on
    its next use with a connection error before any reply: one retry on a new connection
    (which, with Sentinel, asks where the master is now) tells that apart from an outage.
    Timeouts are never retried: a hung server costs a request one timeout, not two.
    """
    settings: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "socket_keepalive_options": {getattr(socket, k): v for k, v in KEEPALIVE_OPTIONS.items()},
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        "health_check_interval": 0,
        **kwargs,
    }
    if not is_sentinel_url(url):
        if urlsplit(url).scheme == "unix":
            settings.pop("socket_keepalive")
            settings.pop("socket_keepalive_options")
        return redis.Redis.from_url(url, **settings)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=_sentinel_kwargs(target, timeout))
    settings = {**target.options, **settings, "db": target.db, "ssl": target.tls}
    client: redis.Redis = sentinel.master_for(target.master, **settings)
    return client


def describe(error: BaseException) -> str:
    """A log-sized description of a Redis error.

    redis-py's "no master found" message repeats each sentinel client's whole repr (2 KB for
    three sentinels): the master's name and how many sentinels failed say as much.
    """
    text = str(error)
    if isinstance(error, MasterNotFoundError):
        head, _, failures = text.partition(" : ")
        count = failures.count("Error") if failures else 0
        return f"{head} ({count} sentinel{'s' if count != 1 else ''} unreachable)" if failures else head
    return text


def fallback_counter(metrics: Metrics, component: str) -> Callable[[], None]:
    """Count one call of `component` served in-process because Redis was unreachable."""
    counter = metrics.counter(
        "redis_fallback_total",
        "Calls served in-process because Redis was unreachable, by component",
        ("component",),
    )
    inc: Callable[[], None] = counter.labels(component=component).inc
    return inc


class DirectConnections:
    """Connections to one client's server for single request-reply calls, outside its pool.

    For the hottest call (the rate-limit decision, once per request) redis-py's command
    path costs more than the round trip's own work: its pool probes every borrowed
    connection for unread data (a non-blocking recv between two ioctl calls) and each
    command is packed argument by argument and dispatched through events and metrics.
    Here the caller sends a command it packed once, on a connection built from the
    client's own settings (URL, password, db, timeouts, TCP or Unix socket), and reads the
    reply with redis-py's parser (hiredis when installed). A connection that fails in any
    way is closed, never reused, so no stale reply can ever be read; list append and pop
    are atomic, so threads share the idle stack without a lock. Create one per process
    (the apps are created after gunicorn forks).
    """

    def __init__(self, client: redis.Redis) -> None:
        pool = client.connection_pool
        self._factory = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._idle: list[Any] = []

    def call(self, command: bytes) -> Any:
        """Send one packed command and return its reply (Redis errors raise).

        An idle connection found closed (the server's `timeout`, a NAT, a failover) is
        retried once on a new one; a new connection's failure is the answer.
        """
        try:
            conn = self._idle.pop()
        except IndexError:
            return self._send(self._connect(), command)
        try:
            return self._send(conn, command)
        except redis.ConnectionError:
            return self._send(self._connect(), command)

    def _connect(self) -> Any:
        """A new connection, opened through its own `connect` (with Sentinel: to the master now)."""
        conn = self._factory()
        conn.connect()
        return conn

    def _send(self, conn: Any, command: bytes) -> Any:
        try:
            conn.send_packed_command([command], check_health=False)
            reply = conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        self._idle.append(conn)
        return reply

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().disconnect()


def pack(*args: bytes) -> bytes:
    """RESP encoding of one command whose arguments are already bytes."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class CircuitBreaker:
    """Open after a failure; after `reset_seconds` let one probe through to close it again."""

    def __init__(
        self,
        name: str,
        reset_seconds: float = REPROBE_SECONDS,
        *,
        store: str = "redis",
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self.store = store
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._log = logger or logging.getLogger("shared.redis")
        self._lock = threading.Lock()
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        """True while calls should skip Redis."""
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether this call may try Redis (closed, or the single half-open probe)."""
        if self._opened_at is None:
            return True
        with self._lock:
            due = self._clock() - self._opened_at >= self.reset_seconds
            if due and not self._probing:
                self._probing = True
                return True
            return False

    def record_success(self) -> None:
        """Close the breaker (logging once if it was open)."""
        if self._opened_at is None:
            return
        with self._lock:
            self._opened_at, self._probing = None, False
        self._log.warning("%s reachable again; %s back on it", self.store, self.name)

    def record_failure(self, error: BaseException) -> None:
        """Open (or keep open) the breaker, logging once per outage."""
        with self._lock:
            first = self._opened_at is None
            self._opened_at, self._probing = self._clock(), False
        if first:
            self._log.warning(
                "%s unreachable (%s); %s falls back to in-process", self.store, describe(error), self.name
            )


BREAKER_EXTENSION = "sardag_redis_breaker"


def reprobe_seconds(url: str | None) -> float:
    """How often an open breaker lets a call try the Redis at `url` again."""
    return SENTINEL_REPROBE_SECONDS if url and is_sentinel_url(url) else REPROBE_SECONDS


def app_breaker(app: Flask) -> CircuitBreaker:
    """The one breaker of `app`'s Redis users (rate limiter, cache).

    Shared, so that a request which uses both waits on a hung Redis once, not once each.
    """
    breaker: CircuitBreaker = app.extensions.setdefault(
        BREAKER_EXTENSION,
        CircuitBreaker("rate limiter and cache", reprobe_seconds(app.config.get("REDIS_URL"))),
    )
    return breaker


def probe(
    ping: Callable[[], object], breaker: CircuitBreaker, errors: tuple[type[BaseException], ...] = REDIS_ERRORS
) -> bool:
    """Whether a store answers `ping` now (for /health), updating `breaker` with the outcome.

    A worker whose requests have not touched the store lately would otherwise report a
    closed breaker as healthy during an outage. Skipped (False) while the breaker is open.
    """
    if not breaker.allow():
        return False
    try:
        ping()
    except errors as exc:
        breaker.record_failure(exc)
        return False
    breaker.record_success()
    return True
