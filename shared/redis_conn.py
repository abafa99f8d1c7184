"""Redis connections with short timeouts, and the circuit breaker shared by its users."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from shared.redis_url import is_sentinel, parse_sentinel_url

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


def redis_client(url: str, timeout: float = FAST_TIMEOUT, **kwargs: Any) -> redis.Redis:
    """A client with bounded connect/read timeouts and no hidden retries.

    For a `redis+sentinel://` URL, the client of the master the sentinels name: every new
    connection asks them, so after a failover the next connection reaches the new master.
    """
    options = _options(timeout, **kwargs)
    if is_sentinel(url):
        spec = parse_sentinel_url(url)
        client: redis.Redis = _sentinel(url, options).master_for(spec.master, db=spec.db)
        return client
    return redis.Redis.from_url(url, **options)


def _options(timeout: float, **kwargs: Any) -> dict[str, Any]:
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        **kwargs,
    }


def _sentinel(url: str, options: dict[str, Any]) -> _Sentinel:
    spec = parse_sentinel_url(url)
    # redis-py's own reading of the query options (ssl_ca_certs, ...), as for a plain URL
    scheme = "rediss" if spec.tls else "redis"
    parsed = redis.connection.parse_url(f"{scheme}://sentinel/{spec.db}?{spec.query}")
    for key in ("host", "port", "db", "connection_class"):
        parsed.pop(key, None)
    auth = {"username": spec.username, "password": spec.password, "ssl": spec.tls}
    # the sentinels take the same credentials and TLS as the master, but never its db
    sentinel_options = {**parsed, **options, **auth}
    return _Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_options, **sentinel_options)


class _Sentinel(Sentinel):
    """redis-py's Sentinel, whose "no master" error is one short line for the logs."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        """The master's address, as the first sentinel that knows it says."""
        try:
            address: tuple[str, int] = super().discover_master(service_name)
        except MasterNotFoundError:
            asked = ", ".join(
                "{host}:{port}".format_map(s.connection_pool.connection_kwargs) for s in self.sentinels
            )
            raise MasterNotFoundError(f"no sentinel names a master {service_name!r} (asked {asked})") from None
        return address


def unknown_master(url: str, timeout: float = 1.0) -> str | None:
    """Why a Sentinel `url` can never work: every sentinel that answers knows no master by its
    name. None when one knows it, or when none answers (an outage, not a setting)."""
    name = parse_sentinel_url(url).master
    answered = []
    for sentinel in _sentinel(url, _options(timeout)).sentinels:
        try:
            masters = sentinel.sentinel_masters()
        except REDIS_ERRORS:
            continue
        finally:
            sentinel.close()
        if name in masters:
            return None
        answered.append("{host}:{port}".format_map(sentinel.connection_pool.connection_kwargs))
    if not answered:
        return None
    return f"no sentinel knows a master named {name!r} (asked {', '.join(answered)})"


def reprobe_seconds(url: str | None) -> float:
    """How often an open breaker lets a call try the Redis at `url` again."""
    return SENTINEL_REPROBE_SECONDS if url and is_sentinel(url) else REPROBE_SECONDS


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
        self._make = functools.partial(pool.connection_class, **pool.connection_kwargs)
        self._idle: list[Any] = []

    def _factory(self) -> Any:
        """A new connection, connected now: `connect()` is where a Sentinel-managed connection
        asks the sentinels for the master (sending on an unconnected one would not ask them)."""
        conn = self._make()
        conn.connect()
        return conn

    def call(self, command: bytes) -> Any:
        """Send one packed command and return its reply (Redis errors raise).

        An idle connection the server closed meanwhile (its `timeout`, a restart, a
        failover: the connection error comes at once) is no outage: the idle ones are
        dropped with it and the command is sent once more on a new connection, which
        under Sentinel asks for the current master. A timeout is never retried (a hung
        server must cost one wait, not two). Should the server have run the command
        before the connection died, the retry counts one request twice: stricter, never
        looser.
        """
        try:
            conn = self._idle.pop()
        except IndexError:
            return self._send(self._factory(), command)
        try:
            return self._send(conn, command)
        except redis.ConnectionError:
            self.close()
            return self._send(self._factory(), command)

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
            self._log.warning("%s unreachable (%s); %s falls back to in-process", self.store, error, self.name)


BREAKER_EXTENSION = "sardag_redis_breaker"


def app_breaker(app: Flask) -> CircuitBreaker:
    """The one breaker of `app`'s Redis users (rate limiter, cache).

    Shared, so that a request which uses both waits on a hung Redis once, not once each.
    """
    reprobe = reprobe_seconds(app.config.get("REDIS_URL"))
    breaker: CircuitBreaker = app.extensions.setdefault(
        BREAKER_EXTENSION, CircuitBreaker("rate limiter and cache", reprobe)
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
