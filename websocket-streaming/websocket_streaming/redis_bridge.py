"""Redis mode: one instance holds the Binance connection; every worker serves the same book.

Each worker has one of three roles, decided again whenever what it knows changes:

- leader: holds the lock (`<lock>` = this instance, PX ttl, renewed every ttl/3). It runs the
  upstream connection and publishes every record it makes, in order and in batches. Its lease
  counts from before each renewal was sent, so it never outlives the key; and every publish
  is a script that checks the lock first, so a leader that lost it (paused, cut off while
  another took over) can never publish into a Redis another instance leads.
- follower: subscribed, and another instance's messages were heard in the last `silence`
  seconds: serve what it publishes; no upstream connection.
- solo: the shared book is lost (the subscription or the lock call failed, or the leader fell
  silent): ingest on this worker's own upstream connection so its prices stay fresh, publish
  nothing. Back to follower once a leader is heard again, but no sooner than `min_solo`
  seconds after going solo, so a flapping Redis cannot spend Binance's connection budget.

Messages: `{"origin", "epoch", "last", "sent_at", "records"}`. Records carry their event ids
(`<epoch>-<seq>`, see book.py); candle events travel among them (`kind: "candle"`, ids
`<epoch>c-<n>`, numbered apart; never stored in `price:*`), so every worker's ring holds
them in the leader's order. A receiver that sees a sequence jump within an epoch (a batch
lost while Redis failed) or that subscribes again marks a gap in its book, so an SSE
client resuming from before the gap gets the snapshot, not a replay with a hole. A leader
with nothing to publish sends an empty message every `silence / 5` s: a heartbeat.
A new leader also writes its whole book to `price:<SYMBOL>` (TTL), where late workers load
it from when they subscribe.

Freshness never compares two hosts' clocks: a record's `received_at` is restamped on
arrival into this host's clock. A message carries the publisher's `sent_at`; the record's
age then (`sent_at - received_at`, both the publisher's clock) is added to the time since
the message arrived. A stored `price:*` value carries `stored_at` the same way, and the
time since it was stored is what its TTL has run down (Redis's clock alone).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

from shared import tracing
from shared.redis_conn import REDIS_ERRORS, describe, redis_client

from .book import CANDLE, PriceBook, PriceRecord

log = logging.getLogger("websocket_streaming.redis")
Reporter = Callable[[BaseException, dict[str, Any]], None]

LEADER, FOLLOWER, SOLO = "leader", "follower", "solo"
INGESTING = frozenset({LEADER, SOLO})  # the roles that hold an upstream connection

# 1: renewed, 2: taken, 0: another instance holds it.
LOCK_SCRIPT = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS: lock, price keys; ARGV: instance, price TTL (ms), channel, message ('' = none), records.
PUBLISH_SCRIPT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
  return 0
end
for i = 2, #KEYS do
  redis.call('set', KEYS[i], ARGV[i + 3], 'PX', ARGV[2])
end
if ARGV[4] ~= '' then
  redis.call('publish', ARGV[3], ARGV[4])
end
return 1
"""


def instance_id() -> str:
    """A name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisBridge:
    """Leader election, publishing and subscribing for one worker process."""

    def __init__(
        self,
        url: str,
        book: PriceBook,
        on_role: Callable[[str], None],
        *,
        prefix: str = "",
        lock_ttl: float = 10.0,
        price_ttl: int = 3600,
        silence: float = 5.0,
        min_solo: float = 5.0,
        report_error: Reporter | None = None,
        lead: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.on_role = on_role
        self.id = instance_id()
        self.lock_key = f"{prefix}lock:websocket-streaming:upstream"
        self.channel = f"{prefix}price-updates"
        self.key_prefix = f"{prefix}price:"
        self.lock_ttl = lock_ttl
        self.price_ttl = price_ttl
        self.silence = silence
        self.heartbeat = silence / 5
        self.min_solo = min_solo
        self.report_error = report_error
        self.lead = lead  # False: never compete for the lock nor ingest, only serve what others publish
        self.clock = clock  # this host's wall clock: what `received_at` and `sent_at` are read on
        self.redis = redis_client(url, timeout=max(0.5, lock_ttl / 4))
        self._publish_script = self.redis.register_script(PUBLISH_SCRIPT)
        self.role = FOLLOWER
        self._lease_until = 0.0
        self._lock_ok = False
        self._subscribed = False  # a subscription is established now
        self._unsubscribed = False  # the last subscription attempt failed (not: still connecting)
        self._heard_at = time.monotonic()  # start-up grace: a leader has `silence` s to be heard
        self._solo_since = 0.0
        self._epochs: dict[str, int] = {}  # last sequence number heard per publisher epoch
        self._sent_at = 0.0
        self._last_sent = 0
        self._store_due = False
        self._outbox: queue.SimpleQueue[PriceRecord] = queue.SimpleQueue()
        self._role_lock = threading.Lock()
        self._callback_lock = threading.Lock()  # one `on_role` call at a time, outside `_role_lock`
        self._applied = FOLLOWER  # the role `on_role` was last called with
        self._logged: dict[str, float] = {}  # thread name -> when its last error was logged
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the subscriber and, when leading is allowed, the leadership and publisher."""
        loops: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
            ("redis-subscribe", self._subscribe, self._subscription_failed)
        ]
        if self.lead:
            loops += [
                ("redis-leader", self._lead, self._lock_failed),
                ("redis-publish", self._publish, self._refresh),
            ]
        for name, target, on_error in loops:
            thread = threading.Thread(target=self._guarded, args=(target, on_error), daemon=True, name=name)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the threads and give up the lock so another instance takes over at once."""
        self._stop.set()
        self.book.sink = None
        for thread in self._threads:
            thread.join(timeout)
        if self._lease_until > time.monotonic():
            self._lease_until = 0.0
            try:
                self.redis.eval(RELEASE_SCRIPT, 1, self.lock_key, self.id)
            except REDIS_ERRORS as exc:
                log.warning("could not release the upstream lock: %s", describe(exc))

    @property
    def alive(self) -> bool:
        """True while every bridge thread runs."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    @property
    def healthy(self) -> bool:
        """True while the subscription and (when leading is allowed) the lock calls work."""
        return self._subscribed and (self._lock_ok or not self.lead)

    def _guarded(self, target: Callable[[], None], on_error: Callable[[], None]) -> None:
        """Run a loop body forever: errors are logged, reported, and the loop goes on."""
        name = threading.current_thread().name
        while not self._stop.is_set():
            try:
                with tracing.quiet():  # lock renewals and heartbeats are no one's trace
                    target()
            except REDIS_ERRORS as exc:
                self._log_error(name, exc)
                on_error()
                self._stop.wait(min(0.5, self.lock_ttl / 3))
            except Exception as exc:
                log.exception("unexpected error in %s", name)
                if self.report_error is not None:
                    self.report_error(exc, {"thread": name})
                on_error()
                self._stop.wait(1.0)

    def _log_error(self, name: str, exc: BaseException) -> None:
        """One line per thread per 10 s however long Redis stays away."""
        now = time.monotonic()
        if now - self._logged.get(name, -10.0) >= 10.0:
            self._logged[name] = now
            log.warning("redis error in %s: %s", name, describe(exc))

    # ---- roles -----------------------------------------------------------------------
    def _decide(self, now: float) -> str:
        if not self.lead:
            return FOLLOWER
        if now < self._lease_until:
            return LEADER
        heard = not self._unsubscribed and now - self._heard_at <= self.silence
        if self.role == SOLO:  # back only for a leader heard since, and not too soon
            heard = heard and self._heard_at > self._solo_since and now - self._solo_since >= self.min_solo
        return FOLLOWER if heard else SOLO

    def _refresh(self) -> None:
        """Take the role the current facts call for; start or stop what it needs."""
        with self._role_lock:
            now = time.monotonic()
            role = self._decide(now)
            if role == self.role or self._stop.is_set():
                return
            log.log(logging.WARNING if role == SOLO else logging.INFO, _ROLE_LOG[role], self.id)
            if role == SOLO:
                self._solo_since = now
            if role == LEADER:  # from now on only another leader's messages count as heard
                self._heard_at = float("-inf")
            self.role = role
            self._store_due = role == LEADER
            self.book.sink = self._outbox.put if role == LEADER else None
        self._apply_role()

    def _apply_role(self) -> None:
        """Call `on_role` with the current role, outside `_role_lock`.

        Starting or stopping upstream connections can take seconds; meanwhile the other
        threads (the subscriber above all) go on. A thread that finds a call running leaves
        the newest role to it: the running call checks again once it returns.
        """
        while self.role != self._applied and self._callback_lock.acquire(blocking=False):
            try:
                role = self.role
                if role != self._applied and not self._stop.is_set():
                    self._applied = role
                    self.on_role(role)
            finally:
                self._callback_lock.release()

    def _subscription_failed(self) -> None:
        self._subscribed, self._unsubscribed = False, True
        self._refresh()

    def _lock_failed(self) -> None:
        self._lock_ok = False
        self._lease_until = 0.0
        self._refresh()

    # ---- leadership ------------------------------------------------------------------
    def _lead(self) -> None:
        while not self._stop.is_set():
            self._hold_lock()
            self._stop.wait(self.lock_ttl / 3)

    def _hold_lock(self) -> None:
        """Renew the lock if ours, take it if free; the lease counts from before the call."""
        sent = time.monotonic()
        held = self.redis.eval(LOCK_SCRIPT, 1, self.lock_key, self.id, int(self.lock_ttl * 1000))
        self._lock_ok = True
        if not held and self.role == LEADER:
            log.warning("lost the upstream lock to another instance")
        self._lease_until = sent + self.lock_ttl if held else 0.0
        self._refresh()

    def holder(self) -> str | None:
        """Who holds the upstream lock now (None if nobody)."""
        value = cast("bytes | None", self.redis.get(self.lock_key))
        return value.decode() if value else None

    # ---- publishing (leader) ---------------------------------------------------------
    def _publish(self) -> None:
        while not self._stop.is_set():
            if self._store_due:  # a new leader: its whole book into price:* for late joiners
                self._store_due = False
                self._run({r.symbol: r.to_dict() for r in self.book.snapshot().values()}, "")
            batch = self._take()
            now = time.monotonic()
            if now >= self._lease_until:  # not the holder (any more): publish nothing
                self._refresh()
            elif batch or now - self._sent_at >= self.heartbeat:
                self._send(batch)

    def _take(self) -> list[PriceRecord]:
        try:
            batch = [self._outbox.get(timeout=self.heartbeat)]
        except queue.Empty:
            return []
        while len(batch) < 1000:
            try:
                batch.append(self._outbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _send(self, batch: list[PriceRecord]) -> None:
        """Publish a batch (or, empty, a heartbeat) with the latest record per symbol stored."""
        prices = [r for r in batch if r.kind is not CANDLE]  # candle events count their own seqs
        if prices:
            self._last_sent = prices[-1].seq
        records = [r.to_dict() for r in batch]
        traced = [r.trace for r in batch if r.trace is not None]
        with self._publish_span(traced, len(batch)) as span:
            for record in records if traced else ():  # receivers continue from this span
                if "traceparent" in record:
                    record["traceparent"] = span.traceparent
            message = {
                "origin": self.id,
                "epoch": self.book.epoch,
                "last": self._last_sent,
                "sent_at": self.clock(),
                "records": records,
            }
            self._sent_at = time.monotonic()
            latest = {  # the newest wins; candle events only travel in the message
                r.symbol: record for r, record in zip(batch, records, strict=True) if r.kind is not CANDLE
            }
            self._run(latest, json.dumps(message))

    def _publish_span(self, traced: list[str], size: int) -> AbstractContextManager[tracing.Span]:
        """A producer span for a batch holding sampled updates: child of the first, linked to the rest."""
        if not traced:
            return nullcontext(tracing.NOOP_SPAN)
        attributes: dict[str, str | int] = {"messaging.system": "redis", "messaging.batch.message_count": size}
        attributes["messaging.destination.name"] = self.channel
        return tracing.span(
            "price publish", parent=traced[0], links=traced[1:], kind="producer", attributes=attributes
        )

    def _run(self, records: dict[str, dict[str, Any]], message: str) -> None:
        """One fenced round trip: stores `records` (by symbol), publishes `message`, if the lock is ours."""
        keys = [self.lock_key, *(self.key_prefix + symbol for symbol in records)]
        args: list[str | float] = [self.id, self.price_ttl * 1000, self.channel, message]
        stored_at = self.clock()
        args.extend(json.dumps({**record, "stored_at": stored_at}) for record in records.values())
        if not self._publish_script(keys=keys, args=args):
            log.warning("publish refused: the upstream lock is no longer ours")
            self._lease_until = 0.0
            self._refresh()

    # ---- subscribing (every worker) --------------------------------------------------
    def _subscribe(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self.book.mark_gap()  # whatever was published while not subscribed is unknown here
            self._epochs.clear()
            self._load_snapshot()
            self._subscribed, self._unsubscribed = True, False
            poll = min(0.5, self.silence / 4)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=poll)
                if message is not None:
                    self._receive(message["data"])
                self._refresh()
        finally:
            pubsub.close()

    def _load_snapshot(self) -> None:
        """Every stored record, its age read from the publisher's clock and the key's TTL."""
        pipe = self.redis.pipeline(transaction=False)
        for symbol in self.book.symbols:
            pipe.get(self.key_prefix + symbol)
            pipe.pttl(self.key_prefix + symbol)
        replies = pipe.execute()
        now = self.clock()
        for raw, left in zip(replies[::2], replies[1::2], strict=True):
            if not raw:
                continue
            data = json.loads(raw)
            record = PriceRecord.from_dict(data)
            stored_age = _age(data.get("stored_at"), record.received_at)
            since_stored = max(0.0, self.price_ttl - left / 1000) if left > 0 else 0.0
            record.received_at = now - since_stored - stored_age
            record.trace = None  # a stored record's trace ended when it was published
            self.book.put(record)

    def _receive(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if message.get("origin") == self.id:
                return
            records = [PriceRecord.from_dict(item) for item in message["records"]]
        except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
            log.warning("unreadable message on %s: %s", self.channel, exc)
            self.book.mark_gap()
            return
        self._heard_at = time.monotonic()
        now = self.clock()
        sent_at = message.get("sent_at")
        for record in records:  # restamped into this host's clock (see the module's docstring)
            record.received_at = now - _age(sent_at, record.received_at)
        for record in records:
            self._follow(record.epoch, record.seq - 1)
            self._epochs[record.epoch] = record.seq
            if record.trace is None:
                self.book.put(record)
                continue
            with tracing.span("price receive", parent=record.trace, kind="consumer") as span:
                record.trace = span.traceparent  # this worker's SSE writes are its children
                self.book.put(record)
        if not records:
            self._follow(str(message.get("epoch")), message.get("last"))

    def _follow(self, epoch: str, previous: object) -> None:
        """Mark a gap when the publisher's sequence went past what was heard from it."""
        heard = self._epochs.get(epoch)
        if heard is not None and heard != previous:
            self.book.mark_gap()
        if isinstance(previous, int):
            self._epochs[epoch] = previous


def _age(then: object, received_at: float) -> float:
    """A record's age at `then` on its publisher's clock; 0 when not told (an older version)."""
    if not isinstance(then, int | float) or isinstance(then, bool):
        return 0.0
    return max(0.0, float(then) - received_at)


_ROLE_LOG = {
    LEADER: "took the upstream lock (%s): leading",
    FOLLOWER: "following the upstream leader through redis (%s)",
    SOLO: "shared book lost (redis or leader unreachable): %s ingests on its own connection",
}
