"""A PostgreSQL cluster with automatic failover for tests: etcd, Patroni, PostgreSQL nodes.

Everything listens on loopback, on free ports of its own, in a temporary directory, and runs
as the `postgres` user (through `runuser`) when the test runs as root. One etcd member is
the DCS; each node is one Patroni process managing one PostgreSQL. Node 0 bootstraps the
cluster; the others clone it with pg_basebackup and stream from the leader.

Timing (Patroni's own floors: ttl >= 20 s, loop_wait >= 1 s, retry_timeout >= 3 s, and
loop_wait + 2 * retry_timeout <= ttl):
- ttl 20: the leader key outlives a leader that died by at most this; it bounds how soon a
  standby may take over after a crash, so it is the floor Patroni allows;
- loop_wait 1: a standby notices the key gone within a second, and a leader renews its key
  every second, so a lost etcd round trip does not cost it the key;
- retry_timeout 3: how long a DCS or PostgreSQL call is retried before Patroni gives up on
  it (a leader that cannot reach etcd for 3 s demotes itself: no two primaries).

Usage (what a whole-system load test reuses):

    with PatroniCluster(synchronous_mode=True) as cluster:
        service_env = {"DATABASE_URL": cluster.url(), "DATABASE_READ_URL": cluster.read_url()}
        old = cluster.leader()
        cluster.kill(old)                 # SIGKILL its Patroni and its PostgreSQL
        cluster.wait_leader(other_than=old)
        cluster.start_node(old)           # rejoins as a standby (pg_rewind if needed)
        cluster.wait_streaming(old)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sardag_testing import free_port, require_server
from sardag_testing.processes import child_pids
from sardag_testing.servers import _binary, _pg_bin_dirs

TTL = 20
LOOP_WAIT = 1
RETRY_TIMEOUT = 3


@dataclass
class Node:
    """One Patroni member: its name, ports, data directory and process."""

    name: str
    pg_port: int
    api_port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        """The PostgreSQL data directory Patroni manages."""
        return self.root / "data"

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>`: the node's entry in a libpq multi-host URL."""
        return f"127.0.0.1:{self.pg_port}"

    def status(self) -> dict[str, Any]:
        """Patroni's REST answer for this node (role, state, timeline...); {} when unreachable."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}/patroni", timeout=1) as answer:
                found: dict[str, Any] = json.load(answer)
                return found
        except urllib.error.HTTPError as exc:  # 503 is how a replica or a stopped node answers
            return dict(json.loads(exc.read() or b"{}"))
        except (OSError, ValueError):
            return {}


@dataclass
class Etcd:
    """A one-member etcd on loopback: Patroni's DCS."""

    root: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start etcd and wait until it answers /health."""
        binary = _binary("etcd", "/usr/bin")
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [binary, "--name", "etcd0", "--data-dir", str(self.root / "etcd")]
        command += ["--listen-client-urls", client, "--advertise-client-urls", client]
        command += ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
        command += ["--initial-cluster", f"etcd0={peer}", "--log-level", "error"]
        log = (self.root / "etcd.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        _wait(lambda: _get_json(f"{client}/health").get("health") == "true", 30, "etcd to answer")

    def stop(self) -> None:
        """Stop etcd (SIGKILL: nothing of it is kept)."""
        _kill(self.process)
        self.process = None


class PatroniCluster:
    """etcd + Patroni + `nodes` PostgreSQL servers, started and broken by a test."""

    def __init__(self, nodes: int = 2, synchronous_mode: bool = True, password: str | None = None) -> None:
        self.bin_dir = _server_bin_dir()
        self._as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="sardag-patroni-"))
        self.scope = f"sardag-{uuid.uuid4().hex[:8]}"
        self.synchronous_mode = synchronous_mode
        self.password = password or uuid.uuid4().hex
        self.etcd = Etcd(self.root)
        self.nodes = [Node(f"node{i}", free_port(), free_port(), self.root / f"node{i}") for i in range(nodes)]
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.python, self.env = _patroni_python(self._as_postgres, self.root)

    # ---- URLs the service is given

    def url(self, database: str = "postgres") -> str:
        """Multi-host URL of the primary, wherever it is (libpq target_session_attrs=read-write)."""
        return self._url(database, "read-write")

    def read_url(self, database: str = "postgres") -> str:
        """Multi-host URL that prefers a standby and falls back on the primary."""
        return self._url(database, "prefer-standby")

    def _url(self, database: str, attrs: str) -> str:
        hosts = ",".join(node.host for node in self.nodes)
        return f"postgresql://postgres:{self.password}@{hosts}/{database}?target_session_attrs={attrs}"

    def node_url(self, node: Node, database: str = "postgres") -> str:
        """URL of one node, whatever its role."""
        return f"postgresql://postgres:{self.password}@{node.host}/{database}"

    # ---- life cycle

    def start(self, timeout: float = 120.0) -> PatroniCluster:
        """Start etcd, bootstrap node 0, then clone the others; wait until all stream."""
        self.etcd.start()
        first, *others = self.nodes
        self.start_node(first)
        self.wait_leader(timeout=timeout)
        for node in others:
            self.start_node(node)
        for node in others:
            self.wait_streaming(node, timeout)
        if self.synchronous_mode:
            _wait(lambda: self.sync_standby() is not None, timeout, "a synchronous standby")
        return self

    def start_node(self, node: Node) -> None:
        """Start (or restart) the node's Patroni; it bootstraps, clones or rejoins by itself."""
        node.root.mkdir(exist_ok=True)
        config = node.root / "patroni.json"
        config.write_text(json.dumps(self._config(node), indent=1))
        if self._as_postgres:
            for path in (node.root, config):
                shutil.chown(path, "postgres", "postgres")
        command = [self.python, "-m", "patroni", str(config)]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        log = (node.root / "patroni.log").open("ab")
        # A session of its own: kill() reaches Patroni and every PostgreSQL process it started.
        node.process = subprocess.Popen(command, stdout=log, stderr=log, env=self.env, start_new_session=True)

    def _config(self, node: Node) -> dict[str, Any]:
        superuser = {"username": "postgres", "password": self.password}
        return {
            "scope": self.scope,
            "namespace": "/sardag-test/",
            "name": node.name,
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd.client_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "synchronous_mode": self.synchronous_mode,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "remove_data_directory_on_rewind_failure": True,
                        "remove_data_directory_on_diverged_timelines": True,
                        "parameters": {
                            "wal_log_hints": "on",
                            "max_wal_senders": 5,
                            "max_replication_slots": 5,
                            "wal_keep_size": "64MB",
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, {"auth-host": "scram-sha-256"}, {"auth-local": "trust"}],
                "pg_hba": [
                    "local all all trust",
                    "host replication postgres 127.0.0.1/32 scram-sha-256",
                    "host all all 127.0.0.1/32 scram-sha-256",
                ],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data),
                "bin_dir": self.bin_dir,
                "pgpass": str(node.root / "pgpass"),
                "authentication": {"superuser": superuser, "replication": superuser, "rewind": superuser},
                "parameters": {"unix_socket_directories": str(node.root), "fsync": "off"},
            },
            "tags": {},
        }

    def kill(self, node: Node) -> None:
        """SIGKILL the node's Patroni and every PostgreSQL process of it: a host lost at once.

        PostgreSQL is frozen first (postmaster and backends): a backend outliving its
        postmaster for a moment could still commit and answer, which no lost host does.
        """
        postgres = self._postgres_pids(node)
        for pid in postgres:
            _signal(pid, signal.SIGSTOP)
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)
            node.process = None
        for pid in postgres:
            _signal(pid, signal.SIGKILL)
        for pid in postgres:  # gone for good before the caller's clock starts
            _wait(lambda pid=pid: _gone(pid), 10, f"process {pid} to end")

    @staticmethod
    def _postgres_pids(node: Node) -> list[int]:
        try:
            postmaster = int((node.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [postmaster, *child_pids(postmaster)] if Path(f"/proc/{postmaster}").exists() else []

    def stop(self) -> None:
        """Kill every node and etcd; delete the directory."""
        for node in self.nodes:
            self.kill(node)
        self.etcd.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what the cluster says

    def members(self) -> list[dict[str, Any]]:
        """`patronictl list` as data: each running member's name, role, state, lag."""
        for node in self.nodes:
            found = _get_json(f"http://127.0.0.1:{node.api_port}/cluster")
            if found:
                return list(found.get("members", []))
        return []

    def leader(self) -> Node | None:
        """The node that is primary now (per Patroni), or None."""
        names = [m["name"] for m in self.members() if m.get("role") == "leader" and m.get("state") == "running"]
        return next((n for n in self.nodes if n.name in names), None)

    def sync_standby(self) -> Node | None:
        """The node that is the synchronous standby now, or None."""
        names = [m["name"] for m in self.members() if m.get("role") == "sync_standby"]
        return next((n for n in self.nodes if n.name in names), None)

    def wait_leader(self, other_than: Node | None = None, timeout: float = 60.0) -> Node:
        """Wait until a node (not `other_than`) is the running primary; return it."""

        def found() -> Node | None:
            leader = self.leader()
            return leader if leader is not None and leader is not other_than else None

        node: Node = _wait(found, timeout, "a primary")
        return node

    def wait_streaming(self, node: Node, timeout: float = 90.0) -> None:
        """Wait until `node` runs as a standby streaming from the primary."""

        def streaming() -> bool:
            member = next((m for m in self.members() if m["name"] == node.name), {})
            return member.get("role") in ("replica", "sync_standby") and member.get("state") == "streaming"

        _wait(streaming, timeout, f"{node.name} to stream from the primary")

    def log_tail(self, node: Node, lines: int = 40) -> str:
        """The end of the node's Patroni log (failure messages)."""
        path = node.root / "patroni.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _server_bin_dir() -> str:
    """The PostgreSQL server's own bin directory (postgres, pg_ctl, pg_rewind, pg_isready...)."""
    tools = ("postgres", "pg_ctl", "initdb", "pg_rewind", "pg_basebackup", "pg_isready", "pg_controldata")
    for folder in _pg_bin_dirs():
        if all((Path(folder) / tool).exists() for tool in tools):
            return folder
    require_server("postgresql", "no PostgreSQL server bin directory under /usr/lib/postgresql")
    raise AssertionError("unreachable")


def _patroni_python(as_postgres: bool, scratch: Path) -> tuple[str, dict[str, str]]:
    """An interpreter the postgres user can run that imports this environment's Patroni.

    Patroni must run as the user PostgreSQL runs as. The project's interpreter may live
    where that user cannot read (a root-only pyenv); the system's CPython of the same
    version can load the same site-packages (same ABI), the `test` extra's Patroni included.
    If that user cannot read the site-packages either (a checkout under /root), Patroni's
    distributions are copied into `scratch` for it.
    """
    try:
        import patroni  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        require_server("patroni", "not installed: it comes with the `test` extra (patroni[etcd])")
    paths = sysconfig.get_paths()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([paths["purelib"], paths["platlib"]]))}
    if not as_postgres:
        return sys.executable, env
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    pythons = (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}")
    installed = env["PYTHONPATH"]
    for search_path in (lambda: installed, lambda: str(_copy_patroni(scratch / "site-packages"))):
        env["PYTHONPATH"] = search_path()  # the copy is made only if the installed one fails
        for python in pythons:
            probe = ["runuser", "-u", "postgres", "--", python, "-c", "import patroni, psycopg2"]
            if subprocess.run(probe, env=env, capture_output=True, timeout=30, check=False).returncode == 0:
                return python, env
    require_server("patroni", f"no Python {version} the postgres user may run imports Patroni")
    raise AssertionError("unreachable")


def _copy_patroni(target: Path) -> Path:
    """Copy the installed files of patroni[etcd] and its dependencies into `target`."""
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted, seen = ["patroni[etcd]", "psycopg2-binary"], set()
    while wanted:
        requirement = Requirement(wanted.pop())
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if ".." not in file.parts and source.is_file():
                (target / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / file)
        for needed in dist.requires or []:
            marker = Requirement(needed).marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in [*requirement.extras, ""]):
                wanted.append(needed)
    subprocess.run(["chmod", "-R", "a+rX", str(target)], check=False)
    return target


def _gone(pid: int) -> bool:
    """No such process, or a zombie (killed, waiting to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            found: dict[str, Any] = json.load(answer)
            return found
    except (OSError, ValueError):
        return {}


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout:g} s for {what}")


def _kill(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(10)
