"""Real servers the shared tests start on loopback: gunicorn and a private redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    """Poll `url` until it answers (any status) or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def start_gunicorn(port: int, env: Mapping[str, str], workers: int = 2) -> subprocess.Popen[bytes]:
    """gunicorn serving the support app with `workers` processes."""
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--bind",
        f"127.0.0.1:{port}",
        "--pythonpath",
        str(HERE),
        "support_app:create_app()",
    ]
    full_env = {**os.environ, "LOG_LEVEL": "WARNING", "REDIS_TIMEOUT_SECONDS": "1", **env}
    process = subprocess.Popen(command, cwd=ROOT, env=full_env)
    wait_for_http(f"http://127.0.0.1:{port}/health")
    return process


def redis_server_binary() -> str | None:
    """Path of the redis-server binary, if installed."""
    return shutil.which("redis-server")


def start_redis(port: int) -> subprocess.Popen[bytes]:
    """A private, throw-away redis-server on `port` (nothing saved to disk)."""
    binary = redis_server_binary() or "redis-server"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return process
        except redis.RedisError:
            time.sleep(0.05)
    process.kill()
    raise TimeoutError("private redis-server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a child and wait for it."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
