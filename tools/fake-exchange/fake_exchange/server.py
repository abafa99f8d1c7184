"""The fake Binance exchange: WebSocket streams and REST on one loopback port.

Runs an asyncio loop in a background thread so tests and benchmarks can drive it
in-process; every control method is thread-safe and returns once it took effect.
"""

from __future__ import annotations

import asyncio
import http
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .market import DEFAULT_START_PRICES, Market
from .rest import RestReply, handle_rest, rate_limited_reply

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
MAX_STREAMS = 1024
# What `FakeExchange.fault` can do to a live connection (the faults of a storm).
FAULT_KINDS = (
    "drop",
    "close_1000",
    "close_1011",
    "close_1008",
    "garbage_burst",
    "silence",
    "server_shutdown",
)
GARBAGE = '{"stream":"btcusdt@trade","data":{not json'
CLOSE_REASONS = {1000: "", 1001: "server shutdown", 1008: "Too many requests", 1011: "internal error"}


@dataclass
class Client:
    """One open WebSocket connection and what it subscribed to."""

    conn: ServerConnection
    combined: bool
    streams: list[str]
    opened_at: float = field(default_factory=time.monotonic)
    silent: bool = False
    incoming: deque[float] = field(default_factory=deque)


@dataclass(frozen=True)
class ClosedConnection:
    """How one WebSocket connection ended, as the exchange saw it."""

    opened_at: float
    closed_at: float
    code: int | None  # the close code the client sent (1006: it sent none)
    by_client: bool  # the client sent its close frame first


@dataclass
class RestLogEntry:
    """One REST request the fake answered."""

    at: float
    target: str
    status: int


def _error(code: int, msg: str, req_id: Any) -> str:
    """A Binance WebSocket API error reply."""
    return json.dumps({"error": {"code": code, "msg": msg}, "id": req_id})


def _json_response(reply: RestReply) -> Response:
    """Turn a RestReply into a websockets HTTP response."""
    body = json.dumps(reply.body, separators=(",", ":")).encode()
    headers = Headers(
        [
            ("Content-Type", "application/json;charset=UTF-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    for name, value in reply.headers.items():
        headers[name] = value
    reason = http.HTTPStatus(reply.status).phrase if reply.status != 418 else "I'm a teapot"
    return Response(reply.status, reason, headers, body)


def parse_stream_path(target: str) -> tuple[bool, list[str]] | None:
    """(combined, streams) for `/stream?streams=a/b` or `/ws/a/b`; None for other paths."""
    parts = urlsplit(target)
    if parts.path == "/stream":
        raw = parse_qs(parts.query).get("streams", [""])[0]
        return True, [s for s in raw.split("/") if s]
    if parts.path == "/ws" or parts.path.startswith("/ws/"):
        return False, [s for s in parts.path.removeprefix("/ws").split("/") if s]
    return None


class FakeExchange:
    """A Binance look-alike on loopback that misbehaves on command."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate: float = 10.0,
        frames: Iterable[str] | None = None,
        symbols: Iterable[str] = DEFAULT_START_PRICES,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 60.0,
        max_incoming_per_second: int = 5,
        shutdown_grace: float = 1.0,
        seed: int | None = None,
    ):
        self.host = host
        self.port = port
        self.rate = rate
        self.frames = list(frames) if frames is not None else None
        self.market = Market(symbols, seed=seed)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_incoming_per_second = max_incoming_per_second
        self.shutdown_grace = shutdown_grace
        self.clients: dict[ServerConnection, Client] = {}
        self.connection_attempts: list[float] = []
        self.rest_log: list[RestLogEntry] = []
        self.close_codes: list[int | None] = []  # close code each client sent (1006: none)
        self.closed: list[ClosedConnection] = []
        self.sent_events = 0
        self._muted: dict[str, set[ServerConnection]] = {}  # stream -> connections it went silent on
        self._refusing: tuple[int, int] | None = None  # (HTTP status, Retry-After) at handshake
        self._close_code_on_connect: int | None = None
        self._closing: set[asyncio.Future[None]] = set()
        self._rest_failure: tuple[int, int, int | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    # ---- lifecycle -------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        """Base WebSocket URL, like `wss://stream.binance.com:9443`."""
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base REST URL, like `https://api.binance.com`."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeExchange:
        """Start serving in a background thread; returns once the port is bound."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="fake-exchange")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake exchange did not start")
        return self

    def stop(self) -> None:
        """Close every connection and stop the loop."""
        if self._loop is None or self._stopping is None:
            return
        self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        async with serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._on_request,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            compression=None,
            close_timeout=1,
        ) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            feeder = asyncio.create_task(self._feed())
            await self._stopping.wait()
            feeder.cancel()
            for client in list(self.clients.values()):
                client.conn.transport.abort()

    def call(self, func: Callable[[], Awaitable[Any] | Any]) -> Any:
        """Run `func` on the exchange's loop and wait for its result."""

        async def runner() -> Any:
            result = func()
            return await result if asyncio.iscoroutine(result) else result

        if self._loop is None:
            raise RuntimeError("fake exchange is not running")
        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(10)

    # ---- HTTP: REST endpoints and the WebSocket handshake ----------------------------
    def _on_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/api/"):
            return self._rest(request.path)
        if parse_stream_path(request.path) is None:
            return _json_response(RestReply(404, {"code": -1, "msg": "Not found."}))
        self.connection_attempts.append(time.monotonic())
        if self._refusing is None:
            return None
        status, retry_after = self._refusing
        if status in (429, 418):
            return _json_response(rate_limited_reply(status, retry_after))
        return conn.respond(http.HTTPStatus(status), "Refusing connections.\n")

    def _rest(self, target: str) -> Response:
        reply = self._rest_failure_reply() or handle_rest(self.market, target)
        self.rest_log.append(RestLogEntry(time.monotonic(), target, reply.status))
        return _json_response(reply)

    def _rest_failure_reply(self) -> RestReply | None:
        if self._rest_failure is None:
            return None
        status, retry_after, remaining = self._rest_failure
        if remaining is not None:
            self._rest_failure = (status, retry_after, remaining - 1) if remaining > 1 else None
        return rate_limited_reply(status, retry_after)

    # ---- WebSocket connections -------------------------------------------------------
    async def _handler(self, conn: ServerConnection) -> None:
        path = conn.request.path if conn.request else "/"
        combined, streams = parse_stream_path(path) or (True, [])
        client = Client(conn, combined, streams[:MAX_STREAMS])
        self.clients[conn] = client
        try:
            code = self._close_code_on_connect
            if code is not None:  # closed before the first message
                await conn.close(code, CLOSE_REASONS.get(code, ""))
                return
            async for message in conn:
                await self._on_message(client, message)
        except ConnectionClosed:
            return
        finally:
            self.clients.pop(conn, None)
            self._record_close(client)

    def _record_close(self, client: Client) -> None:
        conn = client.conn
        self.close_codes.append(conn.close_code)
        by_client = conn.protocol.close_rcvd_then_sent is True
        self.closed.append(ClosedConnection(client.opened_at, time.monotonic(), conn.close_code, by_client))

    async def _on_message(self, client: Client, message: str | bytes) -> None:
        now = time.monotonic()
        client.incoming.append(now)
        while client.incoming and now - client.incoming[0] > 1.0:
            client.incoming.popleft()
        if len(client.incoming) > self.max_incoming_per_second:
            await client.conn.close(1008, "Too many requests")
            return
        await client.conn.send(self._reply(client, message))

    def _reply(self, client: Client, message: str | bytes) -> str:
        """Answer SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS like Binance."""
        try:
            request = json.loads(message)
        except ValueError:
            return _error(3, "Invalid JSON: expected value at line 1 column 1", None)
        if not isinstance(request, dict):
            return _error(2, "Invalid request: expected an object", None)
        req_id = request.get("id")
        if req_id is not None and not (isinstance(req_id, str) or (isinstance(req_id, int) and req_id >= 0)):
            return _error(2, "Invalid request: request ID must be an unsigned integer", None)
        method = request.get("method")
        if method is None:
            return _error(2, "Invalid request: missing field `method` at line 1 column 1", req_id)
        if method not in METHODS:
            expected = ", ".join(f"`{m}`" for m in METHODS)
            return _error(2, f"Invalid request: unknown variant `{method}`, expected one of {expected}", req_id)
        return self._apply_method(client, method, request.get("params"), req_id)

    def _apply_method(self, client: Client, method: str, params: Any, req_id: Any) -> str:
        if method == "LIST_SUBSCRIPTIONS":
            return json.dumps({"result": list(client.streams), "id": req_id})
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return json.dumps({"result": False if method == "GET_PROPERTY" else None, "id": req_id})
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _error(2, "Invalid request: params must be an array of strings", req_id)
        if method == "SUBSCRIBE":
            fresh = [p for p in params if p not in client.streams]
            if len(client.streams) + len(fresh) > MAX_STREAMS:
                return _error(2, "Invalid request: too many streams", req_id)
            client.streams.extend(fresh)
        else:
            client.streams[:] = [s for s in client.streams if s not in params]
        return json.dumps({"result": None, "id": req_id})

    # ---- the feed --------------------------------------------------------------------
    async def _feed(self) -> None:
        index = 0
        while True:
            if self.rate <= 0:
                await asyncio.sleep(0.05)
                continue
            if self.frames:
                self._send_text(self.frames[index % len(self.frames)])
                index += 1
            else:
                self.tick()
            await asyncio.sleep(1 / self.rate)

    def _listening(self) -> list[Client]:
        return [c for c in self.clients.values() if not c.silent]

    def tick(self) -> None:
        """Advance every subscribed symbol one step and send one event per subscribed stream."""
        listening = self._listening()
        streams = sorted({s for c in listening for s in c.streams})
        now_ms = int(time.time() * 1000)
        for symbol in sorted({s.partition("@")[0].upper() for s in streams if s[0] != "!"}):
            self.market.step(symbol, now_ms)
        for stream in streams:
            payload = self.market.payload(stream, now_ms)
            if payload is not None:
                muted = self._muted.get(stream, set())
                subscribed = [c for c in listening if stream in c.streams and c.conn not in muted]
                self._send_payload(stream, payload, subscribed)

    def _send_payload(self, stream: str, payload: object, clients: list[Client]) -> None:
        """Send one event to `clients`: wrapped for combined connections, bare for raw ones."""
        raw = json.dumps(payload, separators=(",", ":"))
        wrapped = f'{{"stream":"{stream}","data":{raw}}}'
        broadcast([c.conn for c in clients if c.combined], wrapped)
        broadcast([c.conn for c in clients if not c.combined], raw)
        self.sent_events += 1

    def _send_text(self, text: str) -> None:
        broadcast([c.conn for c in self._listening()], text)
        self.sent_events += 1

    # ---- commands (thread-safe) ------------------------------------------------------
    def send(self, payload: object, stream: str | None = None) -> None:
        """Send one frame to every listening client; with `stream`, as an event of it."""

        def run() -> None:
            if stream is not None:
                self._send_payload(stream, payload, self._listening())
            else:
                self._send_text(payload if isinstance(payload, str) else json.dumps(payload))

        self.call(run)

    def set_rate(self, rate: float) -> None:
        """Change the generated events per second per stream (0 = only explicit sends)."""
        self.rate = rate

    def _targets(self, only: int | None) -> list[Client]:
        """Every open connection, or only the `only`-th in opening order (0 oldest, -1 newest)."""
        clients = sorted(self.clients.values(), key=lambda c: c.opened_at)
        if only is None:
            return clients
        return [clients[only]] if -len(clients) <= only < len(clients) else []

    def drop(self, only: int | None = None) -> None:
        """Cut open TCP connections (all, or the `only`-th) without a close frame."""

        def abort() -> None:
            for client in self._targets(only):
                client.conn.transport.abort()

        self.call(abort)

    def mute_stream(self, stream: str) -> None:
        """Stop generating `stream` on the connections open now while the others go on (as
        Binance sometimes does); a connection opened later gets it again."""

        def run() -> None:
            self._muted.setdefault(stream, set()).update(self.clients)

        self.call(run)

    def go_silent(self, only: int | None = None) -> None:
        """Stop sending data on open connections (pings go on); new ones get data."""

        def run() -> None:
            for client in self._targets(only):
                client.silent = True

        self.call(run)

    def resume(self) -> None:
        """Undo every misbehaviour: accept connections, answer REST, keep connections open."""
        self._refusing = None
        self._close_code_on_connect = None
        self._rest_failure = None

    def send_garbage(self, count: int = 1, only: int | None = None) -> None:
        """Send `count` frames that are not JSON (to every connection, or the `only`-th)."""

        def garbage() -> None:
            for _ in range(count):
                broadcast([c.conn for c in self._targets(only)], GARBAGE)

        self.call(garbage)

    def send_unknown_event(self) -> None:
        """Send a well-formed event of a type the client has never heard of."""
        data = {"e": "fooBar", "E": int(time.time() * 1000), "s": "BTCUSDT", "z": "1"}
        self.send({"stream": "btcusdt@fooBar", "data": data})

    def close(self, code: int, only: int | None = None) -> None:
        """Close open connections (all, or the `only`-th) with a close frame of `code`."""

        async def run() -> None:
            reason = CLOSE_REASONS.get(code, "")
            await asyncio.gather(*(c.conn.close(code, reason) for c in self._targets(only)))

        self.call(run)

    def close_1008(self, persistent: bool = False, only: int | None = None) -> None:
        """Close with 1008; `persistent` also closes each new connection on open."""
        if persistent:
            self._close_code_on_connect = 1008
        self.close(1008, only)

    def close_on_connect(self, code: int = 1000) -> None:
        """Accept every new connection, then close it with `code` before any data, until `resume()`."""
        self._close_code_on_connect = code

    def server_shutdown(self, close: bool = True, only: int | None = None) -> None:
        """Send `serverShutdown`; with `close`, close those connections after the grace time."""

        def run() -> None:
            clients = self._targets(only)
            data = {"e": "serverShutdown", "E": int(time.time() * 1000)}
            raw = json.dumps(data, separators=(",", ":"))
            broadcast([c.conn for c in clients if c.combined], f'{{"stream":"!serverShutdown","data":{raw}}}')
            broadcast([c.conn for c in clients if not c.combined], raw)
            for c in clients if close else ():
                asyncio.get_running_loop().call_later(self.shutdown_grace, self._close_for_shutdown, c.conn)

        self.call(run)

    def fault(self, kind: str, only: int | None = None) -> None:
        """Inflict one of FAULT_KINDS on the open connections (all, or the `only`-th)."""
        actions: dict[str, Callable[[], None]] = {
            "drop": lambda: self.drop(only),
            "close_1000": lambda: self.close(1000, only),
            "close_1011": lambda: self.close(1011, only),
            "close_1008": lambda: self.close(1008, only),
            "garbage_burst": lambda: self.send_garbage(20, only),
            "silence": lambda: self.go_silent(only),
            "server_shutdown": lambda: self.server_shutdown(only=only),
        }
        if kind not in actions:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        actions[kind]()

    def refuse_connections(self, status: int = 503, retry_after: int = 1) -> None:
        """Answer every new WebSocket handshake with HTTP `status` until `resume()`.

        429 and 418 carry Binance's JSON error and `Retry-After: retry_after`, as the REST API does.
        """
        self._refusing = (status, retry_after)

    def rest_429(self, retry_after: int = 1, count: int | None = 1) -> None:
        """Answer the next `count` REST requests (None: all until resume) with 429."""
        self._rest_failure = (429, retry_after, count)

    def _close_for_shutdown(self, conn: ServerConnection) -> None:
        """Close `conn` as Binance does once a serverShutdown grace period ends."""
        task = asyncio.ensure_future(conn.close(1001, "server shutdown"))
        self._closing.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._closing.discard)

    def rest_418(self, retry_after: int = 120, count: int | None = 1) -> None:
        """Answer the next `count` REST requests (None: all until resume) with 418 (banned)."""
        self._rest_failure = (418, retry_after, count)

    def open_connections(self) -> int:
        """How many WebSocket connections are open right now."""
        count: int = self.call(lambda: len(self.clients))
        return count


def read_frames(path: str | Path) -> list[str]:
    """Read a JSON-lines frames file, one frame a line, blank lines skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]
