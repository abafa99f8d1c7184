"""Private servers a test starts, breaks and restarts on loopback: redis-server, PostgreSQL.

Each one listens on a free port of its own, so stopping it disturbs nothing else on the
machine (never the shared PostgreSQL or Redis). A missing binary skips the test with the
reason, or fails it under CI=true.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from sardag_testing import free_port, require_server


def _binary(name: str, *extra_dirs: str) -> str:
    """Path of `name` on PATH or in `extra_dirs`; skip (fail under CI) when absent."""
    for candidate in [shutil.which(name), *(str(Path(d) / name) for d in extra_dirs)]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    require_server(name, "binary not installed")
    raise AssertionError("unreachable")


class PrivateRedis:
    """A throw-away redis-server on its own port (nothing saved to disk)."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.binary = _binary("redis-server")
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://[:password@]127.0.0.1:<port>/0`."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        """Start (or restart) the server and wait until it answers PING."""
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        command += ["--requirepass", self.password] if self.password else []
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ping()
        return self

    def _wait_ping(self, timeout: float = 10.0) -> None:
        import redis

        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
            finally:
                client.close()
        self.stop()
        raise TimeoutError(f"private redis-server on {self.port} did not start")

    def stop(self) -> None:
        """Stop the server now (SIGKILL: an outage, not a clean shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own (`initdb` + `pg_ctl`), trust auth, on loopback.

    Run as the `postgres` user (through `runuser`) when the test runs as root, because
    PostgreSQL refuses to start as root.
    """

    def __init__(
        self, port: int | None = None, settings: dict[str, str] | None = None, password: str | None = None
    ) -> None:
        self.initdb = _binary("initdb", *_pg_bin_dirs())
        self.pg_ctl = _binary("pg_ctl", *_pg_bin_dirs())
        self.port = port or free_port()
        self.settings = settings or {}
        self.password = password  # set: TCP logins need it (scram-sha-256); unset: trust
        self.root = Path(tempfile.mkdtemp(prefix="sardag-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        """`postgresql://postgres[:password]@127.0.0.1:<port>/postgres`."""
        return self.database_url("postgres")

    def database_url(self, database: str, password: str | None = None) -> str:
        """URL of `database` on this server (with this server's password unless `password`)."""
        secret = self.password if password is None else password
        user = f"postgres:{quote(secret, safe='')}" if secret else "postgres"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def create(self) -> PrivatePostgres:
        """initdb a new cluster (trust auth) with `settings` in postgresql.conf."""
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        done = self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "-E", "UTF8", *self._auth())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        lines = [f"port = {self.port}", "listen_addresses = '127.0.0.1'", "unix_socket_directories = ''"]
        self._append_conf([*lines, "fsync = off"], self.settings)
        return self

    def _auth(self) -> list[str]:
        if not self.password:
            return ["--auth=trust"]
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        return ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]

    def _append_conf(self, lines: list[str], settings: dict[str, str]) -> None:
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join([*lines, *(f"{k} = '{v}'" for k, v in settings.items())]) + "\n")

    def configure(self, **settings: str) -> None:
        """Add `settings` to postgresql.conf (later lines win); they apply at the next start."""
        self._append_conf([], settings)

    def execute(self, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one statement in autocommit mode; return its rows (none for a command)."""
        import psycopg2

        conn = psycopg2.connect(self.database_url(database), connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def start(self, timeout: float = 30.0) -> PrivatePostgres:
        """Start the server and wait until it accepts connections."""
        if not self.data.exists():
            self.create()
        done = self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.logfile), "-w", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{self.log_tail()}")
        self._wait_connect(timeout)
        return self

    def _wait_connect(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.url, connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m <mode>` (fast: disconnect clients; immediate: a crash)."""
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def pids(self) -> list[int]:
        """The postmaster and every process it started (none when the server is down)."""
        from sardag_testing.processes import child_pids

        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [postmaster, *child_pids(postmaster)]

    def freeze(self) -> list[int]:
        """SIGSTOP every process of the server (a hung host: connections stay open); return them."""
        frozen = self.pids()
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        return frozen

    @staticmethod
    def thaw(frozen: list[int]) -> None:
        """SIGCONT the processes `freeze` stopped."""
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for failure messages."""
        if not self.logfile.exists():
            return ""
        return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])

    def destroy(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _pg_bin_dirs() -> list[str]:
    base = Path("/usr/lib/postgresql")
    return [str(d / "bin") for d in sorted(base.glob("*"), reverse=True)] if base.exists() else []
