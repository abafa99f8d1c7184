"""A Redis Sentinel stack of a test's own: one master, one replica, three sentinels on loopback.

Built from Debian's redis-server (a sentinel is `redis-server <conf> --sentinel`, which is
all the `redis-sentinel` package runs), each on a free port, nothing saved to disk. Tuned
to fail over fast: a master is down after 1 s without answers, and two sentinels agree.
Use it as a context manager; `url` is the services' `REDIS_URL`; `kill_master()` is the
fault (SIGKILL) and `wait_failover()` returns when the sentinels name the new master;
`wait_new_master(old)` does the same and returns the new master, `restart(old)` brings the
killed node back as a replica of it:

    with SentinelStack() as stack:
        env = {"REDIS_URL": stack.url}
        old = stack.kill_master()
        stack.wait_new_master(old)
        stack.restart(old)
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from sardag_testing import free_port
from sardag_testing.servers import PrivateRedis, _binary

MASTER_NAME = "sardag"
DOWN_AFTER_MS = 1000  # sentinel down-after-milliseconds: how long a silent master is still trusted


class RedisNode(PrivateRedis):
    """A redis-server of the stack: master, or replica of `master_port`."""

    def __init__(
        self, password: str | None, master_port: int | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        super().__init__(password=password)
        self.master_port = master_port
        self.extra = extra

    def start(self) -> RedisNode:
        """Start the server (as replica when it has a master) and wait for PING."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--protected-mode", "no", *self.extra]
        # Replication without files: a replica's full sync would write dump.rdb into the
        # working directory (the checkout) otherwise; and no 5 s wait before a sync.
        command += ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        command += ["--repl-diskless-load", "on-empty-db"]
        if self.password:
            command += ["--requirepass", self.password, "--masterauth", self.password]
        if self.master_port:
            command += ["--replicaof", "127.0.0.1", str(self.master_port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ping()
        return self


class SentinelStack:
    """Master, replica and three sentinels; `url` is the `redis+sentinel://` REDIS_URL."""

    def __init__(self, password: str | None = None, sentinels: int = 3, db: int = 0) -> None:
        self.binary = _binary("redis-server")
        self.password = password
        self.db = db
        self.root = Path(tempfile.mkdtemp(prefix="sardag-sentinel-"))
        self.master = RedisNode(password)
        self.replica = RedisNode(password, self.master.port)
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """`redis+sentinel://[:password@]127.0.0.1:<p1>,...:<p3>/<master>/<db>`."""
        auth = f":{self.password}@" if self.password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/{self.db}"

    def start(self) -> SentinelStack:
        """Start master, replica (wait until in sync) and sentinels (wait until they see both)."""
        self.master.start()
        self.replica.start()
        self._wait(lambda: self._synced(self.replica.port))
        for port in self.sentinel_ports:
            conf = self.root / f"sentinel-{port}.conf"
            conf.write_text(self._sentinel_conf(port))
            command = [self.binary, str(conf), "--sentinel"]
            self.sentinels.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        self._wait(lambda: all(self._knows_replica(port) for port in self.sentinel_ports), timeout=20)
        return self

    def _sentinel_conf(self, port: int) -> str:
        lines = [
            f"port {port}",
            "bind 127.0.0.1",
            "protected-mode no",
            f"dir {self.root}",
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} 10000",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password:  # the same password on the sentinels and the data nodes
            lines += [f"sentinel auth-pass {MASTER_NAME} {self.password}", f"requirepass {self.password}"]
        return "\n".join(lines) + "\n"

    def sentinel_client(self, port: int) -> redis.Redis:
        """A plain client of one sentinel."""
        return redis.Redis(port=port, password=self.password, socket_timeout=1, socket_connect_timeout=1)

    def _node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=self.password, socket_timeout=1, socket_connect_timeout=1)

    def _synced(self, port: int) -> bool:
        info: dict[str, object] = self._node(port).info("replication")  # type: ignore[assignment]
        return info.get("master_link_status") == "up"

    def _knows_replica(self, port: int) -> bool:
        try:
            client = self.sentinel_client(port)
            replicas = client.sentinel_slaves(MASTER_NAME)
            others = client.sentinel_master(MASTER_NAME)["num-other-sentinels"]
        except redis.RedisError:
            return False
        return bool(replicas) and others >= len(self.sentinel_ports) - 1

    def master_port(self) -> int | None:
        """The master's port as the first answering sentinel names it."""
        for port in self.sentinel_ports:
            try:
                address = self.sentinel_client(port).sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            return int(address[1]) if address else None
        return None

    def kill_master(self) -> RedisNode:
        """SIGKILL the current master (the fault); returns it."""
        node = self.master
        assert node.process is not None
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        node.process = None
        return node

    def wait_failover(self, timeout: float = 30.0) -> float:
        """Wait until the sentinels name the replica as master; swap roles; monotonic time seen."""
        self._wait(lambda: self.master_port() == self.replica.port, timeout=timeout, interval=0.05)
        seen = time.monotonic()
        self.master, self.replica = self.replica, self.master
        return seen

    def wait_new_master(self, other_than: RedisNode | int, timeout: float = 30.0) -> RedisNode:
        """Wait until the sentinels name a master other than `other_than` (a node or its port); return it."""
        old = other_than if isinstance(other_than, int) else other_than.port
        self._wait(lambda: self.master_port() not in (None, old), timeout=timeout, interval=0.05)
        if self.master.port == old:
            self.master, self.replica = self.replica, self.master
        return self.master

    def restart(self, node: RedisNode, timeout: float = 30.0) -> None:
        """Start a killed node again as a replica of the current master; wait until it syncs."""
        node.master_port = self.master.port
        node.start()
        self._wait(lambda: self._synced(node.port), timeout=timeout)

    def rejoin_old_master(self) -> None:
        """Restart the killed node; the sentinels make it a replica of the new master."""
        self.replica.master_port = self.master.port
        self.replica.start()

    @staticmethod
    def _wait(check: object, timeout: float = 10.0, interval: float = 0.1) -> None:
        assert callable(check)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                met = bool(check())
            except redis.RedisError:  # not up yet: the deadline decides
                met = False
            if met:
                return
            time.sleep(interval)
        raise TimeoutError("sentinel stack: condition not met in time")

    def stop(self) -> None:
        """Stop every process of the stack."""
        for process in self.sentinels:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.sentinels.clear()
        self.master.stop()
        self.replica.stop()
        shutil.rmtree(self.root, ignore_errors=True)  # the sentinels' rewritten config files

    def __enter__(self) -> SentinelStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
