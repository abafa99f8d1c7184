"""Redis with automatic failover for tests: a master, its replicas and three sentinels.

Everything listens on loopback, on free ports of its own, in a temporary directory. The
servers are Debian's `redis-server`; the sentinels are the same binary in `--sentinel` mode
(what Debian's `redis-sentinel` package starts), each with a config file of its own, which
Sentinel rewrites as it learns the topology.

Timing:
- down-after-milliseconds 1000: a master that answers no PING for a second is subjectively
  down; two sentinels agreeing (quorum 2 of 3) make it objectively down and elect one of
  them to fail over: a promotion about 2 s after the kill on a quiet machine;
- failover-timeout 3000: a failover stuck for 3 s (its elected sentinel died) is retried
  by another, and a second failover of the same master may start that soon after the first;
- repl-diskless-sync-delay 0: a replica (or a restarted old master) syncs at once, not after
  Redis's default 5 s wait for other replicas to join.
Isolation: the master's name and the password (of servers and sentinels alike) are new for
each stack, so sentinels of another stack on this machine, which may meet one of these
ports again after a restart, can neither adopt these servers nor be adopted.
Nothing is persisted: a restarted node is started as a replica of the current master, so
its empty dataset never replaces the data (what Redis's docs warn about for a master
restarted without persistence).

Usage (what a whole-system load test reuses):

    with SentinelStack() as stack:
        service_env = {"REDIS_URL": stack.url}
        old = stack.kill_master()          # SIGKILL the master
        stack.wait_new_master(other_than=old)
        stack.restart(old)                 # rejoins as a replica of the new master
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shared.testing import free_port
from shared.testing.servers import _binary

QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
T = TypeVar("T")


@dataclass
class RedisNode:
    """One redis-server (a data node or a sentinel): its name, port, directory and process."""

    name: str
    port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL it: a host lost at once (no shutdown, no goodbye to replicas)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


class SentinelStack:
    """`replicas` + 1 redis-servers and `sentinels` sentinels, started and broken by a test."""

    def __init__(self, replicas: int = 1, sentinels: int = 3, password: str | None = None) -> None:
        self.binary = _binary("redis-server")
        self.password = password or uuid.uuid4().hex
        self.master_name = f"sardag-{uuid.uuid4().hex[:8]}"
        self.root = Path(tempfile.mkdtemp(prefix="sardag-sentinel-"))
        self.nodes = [self._node(f"redis{i}") for i in range(replicas + 1)]
        self.sentinels = [self._node(f"sentinel{i}") for i in range(sentinels)]

    def _node(self, name: str) -> RedisNode:
        return RedisNode(name, free_port(), self.root / name)

    # ---- what a service is given

    @property
    def url(self) -> str:
        """`redis+sentinel://:<password>@127.0.0.1:<s1>,...:<s3>/<master name>/0`: REDIS_URL."""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        """The Sentinel URL of database `db`."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://:{self.password}@{hosts}/{self.master_name}/{db}"

    # ---- life cycle

    def start(self, timeout: float = 30.0) -> SentinelStack:
        """Start the master, its replicas, then the sentinels; wait until all know each other."""
        master, *replicas = self.nodes
        self._start_server(master, None)
        for node in replicas:
            self._start_server(node, master)
        for node in replicas:
            self.wait_replicating(node, timeout)
        for sentinel in self.sentinels:
            self._start_sentinel(sentinel, master)

        def acquainted() -> bool:
            # each sentinel sees every replica and every other sentinel: a failover can start
            wanted = (str(len(replicas)), str(len(self.sentinels) - 1))
            states = [self._sentinel_state(s) for s in self.sentinels]
            return all((s.get("num-slaves"), s.get("num-other-sentinels")) == wanted for s in states)

        _wait(acquainted, timeout, "the sentinels to know the replicas and each other")
        return self

    def _start_server(self, node: RedisNode, master: RedisNode | None) -> None:
        node.root.mkdir(exist_ok=True)
        command = [self.binary, "--port", str(node.port), "--bind", "127.0.0.1", "--dir", str(node.root)]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        command += ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        command += ["--requirepass", self.password, "--masterauth", self.password]
        if master is not None:
            command += ["--replicaof", "127.0.0.1", str(master.port)]
        node.process = self._spawn(node, command)
        _wait(lambda: self._ping(node.port), 10, f"{node.name} to answer PING")

    def _start_sentinel(self, sentinel: RedisNode, master: RedisNode) -> None:
        sentinel.root.mkdir(exist_ok=True)
        lines = [
            f"port {sentinel.port}",
            "bind 127.0.0.1",
            "protected-mode no",
            f"dir {sentinel.root}",
            f"sentinel monitor {self.master_name} 127.0.0.1 {master.port} {QUORUM}",
            f"sentinel down-after-milliseconds {self.master_name} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {self.master_name} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {self.master_name} 1",
            f"sentinel auth-pass {self.master_name} {self.password}",
            f"requirepass {self.password}",  # the sentinels ask for the same password the servers do
        ]
        config = sentinel.root / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        sentinel.process = self._spawn(sentinel, [self.binary, str(config), "--sentinel"])
        _wait(lambda: self._ping(sentinel.port), 10, f"{sentinel.name} to answer PING")

    def _spawn(self, node: RedisNode, command: list[str]) -> subprocess.Popen[bytes]:
        log = (node.root / "server.log").open("ab")
        return subprocess.Popen(command, stdout=log, stderr=log)

    def stop(self) -> None:
        """Kill every sentinel and server; delete the directory."""
        for node in (*self.sentinels, *self.nodes):
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SentinelStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults

    def kill_master(self) -> RedisNode:
        """SIGKILL the current master; return it (for `wait_new_master` and `restart`)."""
        node = self.master()
        node.kill()
        return node

    def restart(self, node: RedisNode, timeout: float = 30.0) -> None:
        """Start a killed node again as a replica of the current master; wait until it syncs."""
        self._start_server(node, self.master())
        self.wait_replicating(node, timeout)

    # ---- what the stack says

    def master_port(self) -> int:
        """The port of the master most sentinels name now (TimeoutError when they cannot agree)."""

        def agreed() -> int | None:
            named = [self._sentinel_master(s) for s in self.sentinels if s.running]
            ports = [p for p in named if p is not None]
            best = max(set(ports), key=ports.count, default=None)
            return best if best is not None and ports.count(best) >= QUORUM else None

        port: int = _wait(agreed, 10, "the sentinels to agree on a master")
        return port

    def master(self) -> RedisNode:
        """The node that is the master now."""
        port = self.master_port()
        return next(n for n in self.nodes if n.port == port)

    def wait_new_master(self, other_than: RedisNode | int, timeout: float = 30.0) -> RedisNode:
        """Wait until the sentinels name a master other than `other_than` (a node or its port)
        and it answers as master; return it."""
        old = other_than if isinstance(other_than, int) else other_than.port

        def promoted() -> RedisNode | None:
            with contextlib.suppress(TimeoutError):
                node = self.master()
                if node.port != old and self._role(node.port) == "master":
                    return node
            return None

        node: RedisNode = _wait(promoted, timeout, f"a master other than port {old}")
        return node

    def wait_replicating(self, node: RedisNode, timeout: float = 30.0) -> None:
        """Wait until `node` is a replica whose link to its master is up."""

        def linked() -> bool:
            info = self._call(node.port, "INFO", "replication") or {}
            return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")

        _wait(linked, timeout, f"{node.name} to replicate its master")

    def log_tail(self, node: RedisNode, lines: int = 40) -> str:
        """The end of a node's or sentinel's log (failure messages)."""
        path = node.root / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # ---- one-shot calls

    def _call(self, port: int, *command: str) -> Any:
        import redis

        client = redis.Redis(port=port, password=self.password, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return client.execute_command(*command)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def _ping(self, port: int) -> bool:
        return bool(self._call(port, "PING"))

    def _role(self, port: int) -> str | None:
        answer = self._call(port, "ROLE")
        return answer[0].decode() if answer else None

    def _sentinel_master(self, sentinel: RedisNode) -> int | None:
        answer = self._call(sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return int(answer[1]) if answer else None

    def _sentinel_state(self, sentinel: RedisNode) -> dict[str, str]:
        answer = self._call(sentinel.port, "SENTINEL", "MASTER", self.master_name) or []
        flat = [x.decode() if isinstance(x, bytes) else str(x) for x in answer]
        return dict(zip(flat[::2], flat[1::2], strict=True))


def _wait(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"waited {timeout:g} s for {what}")
