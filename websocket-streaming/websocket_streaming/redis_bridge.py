"""Redis mode: one instance holds the Binance connection; every worker serves the same book.

- Leadership: `SET <lock> <instance> NX PX ttl`, renewed by a compare-and-extend script.
  The holder runs the upstream connection; the others retry and take over once it lapses.
- The leader writes each record to `price:<SYMBOL>` (TTL) and publishes it, in order and
  in batches, on one channel. Every worker (the leader included) subscribes; each applies
  what other instances published and loads the `price:*` snapshot when it starts.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from shared.redis_conn import REDIS_ERRORS, redis_client

from .book import PriceBook, PriceRecord

log = logging.getLogger("websocket_streaming.redis")
Reporter = Callable[[BaseException, dict[str, Any]], None]

RENEW_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
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
        on_leadership: Callable[[bool], None],
        *,
        prefix: str = "",
        lock_ttl: float = 10.0,
        price_ttl: int = 3600,
        report: Reporter | None = None,
        lead: bool = True,
    ) -> None:
        self.book = book
        self.on_leadership = on_leadership
        self.id = instance_id()
        self.lock_key = f"{prefix}lock:websocket-streaming:upstream"
        self.channel = f"{prefix}price-updates"
        self.key_prefix = f"{prefix}price:"
        self.lock_ttl = lock_ttl
        self.price_ttl = price_ttl
        self.report = report
        self.lead = lead  # False: never compete for the lock, only serve what others publish
        self.redis = redis_client(url, timeout=max(0.5, lock_ttl / 4))
        self.is_leader = False
        self.healthy = False
        self._outbox: queue.SimpleQueue[PriceRecord] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the subscriber and, when leading is allowed, the leadership and publisher."""
        self.book.sink = self._outbox.put
        loops = [("redis-subscribe", self._subscribe)]
        if self.lead:
            loops += [("redis-leader", self._lead), ("redis-publish", self._publish)]
        for name, target in loops:
            thread = threading.Thread(target=self._guarded, args=(target,), daemon=True, name=name)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the threads and give up the lock so another instance takes over at once."""
        self._stop.set()
        self.book.sink = None
        for thread in self._threads:
            thread.join(timeout)
        if self.is_leader:
            self._set_leader(False)
            try:
                self.redis.eval(RELEASE_SCRIPT, 1, self.lock_key, self.id)
            except REDIS_ERRORS as exc:
                log.warning("could not release the upstream lock: %s", exc)

    @property
    def alive(self) -> bool:
        """True while every bridge thread runs."""
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def _guarded(self, target: Callable[[], None]) -> None:
        """Run a loop body forever: errors are logged, reported, and the loop goes on."""
        while not self._stop.is_set():
            try:
                target()
            except REDIS_ERRORS as exc:
                self.healthy = False
                log.warning("redis error in %s: %s", threading.current_thread().name, exc)
                self._stop.wait(min(1.0, self.lock_ttl / 3))
            except Exception as exc:
                log.exception("unexpected error in %s", threading.current_thread().name)
                if self.report is not None:
                    self.report(exc, {"thread": threading.current_thread().name})
                self._stop.wait(1.0)

    # ---- leadership ------------------------------------------------------------------
    def _lead(self) -> None:
        while not self._stop.is_set():
            ttl_ms = int(self.lock_ttl * 1000)
            if self.is_leader:
                still = self.redis.eval(RENEW_SCRIPT, 1, self.lock_key, self.id, ttl_ms)
                if not still:
                    log.warning("lost the upstream lock to another instance")
                    self._set_leader(False)
            elif self.redis.set(self.lock_key, self.id, nx=True, px=ttl_ms):
                log.info("took the upstream lock (%s)", self.id)
                self._set_leader(True)
            self.healthy = True
            self._stop.wait(self.lock_ttl / 3)

    def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            self.on_leadership(leader)

    def holder(self) -> str | None:
        """Who holds the upstream lock now (None if nobody)."""
        value = self.redis.get(self.lock_key)
        return value.decode() if value else None

    # ---- publishing (leader) ---------------------------------------------------------
    def _publish(self) -> None:
        while not self._stop.is_set():
            try:
                batch = [self._outbox.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(batch) < 1000:
                try:
                    batch.append(self._outbox.get_nowait())
                except queue.Empty:
                    break
            self._send(batch)

    def _send(self, batch: list[PriceRecord]) -> None:
        """One round trip: the latest record per symbol stored, the whole batch published."""
        pipe = self.redis.pipeline(transaction=False)
        latest = {r.symbol: r for r in batch}
        for symbol, record in latest.items():
            pipe.set(self.key_prefix + symbol, json.dumps(record.to_dict()), ex=self.price_ttl)
        message = {"origin": self.id, "records": [r.to_dict() for r in batch]}
        pipe.publish(self.channel, json.dumps(message))
        pipe.execute()

    # ---- subscribing (every worker) --------------------------------------------------
    def _subscribe(self) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel)
        try:
            self._load_snapshot()
            self.healthy = True
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=0.5)
                if message is not None:
                    self._receive(message["data"])
        finally:
            pubsub.close()

    def _load_snapshot(self) -> None:
        keys = [self.key_prefix + s for s in self.book.symbols]
        for raw in self.redis.mget(keys):
            if raw:
                self.book.put(PriceRecord.from_dict(json.loads(raw)))

    def _receive(self, data: bytes) -> None:
        message = json.loads(data)
        if message.get("origin") == self.id:
            return
        for item in message.get("records", []):
            self.book.put(PriceRecord.from_dict(item))
