"""The README's `make run` itself: both services, a price from the fake feed, Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sardag_testing import free_port, wait_until
from sardag_testing.processes import REPO, Launcher, Running, answers, http, listening, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.api]


def _session(sid: int) -> list[str]:
    """The command lines of every live process in session `sid` (whatever its process group)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def _make_run(launch: Launcher, ports: dict[str, int], name: str) -> Running:
    """`make run` with FEED=fake on `ports`, in a session of its own (its own process group)."""
    env = service_env(launch.tmp, TMPDIR=str(launch.tmp), FEED="fake", LOG_LEVEL="WARNING")
    env.update({key: str(port) for key, port in ports.items()})
    return launch.start(name, ["make", "run"], env)


def test_make_run_serves_both_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    ports = {key: free_port() for key in ("DATABASE_SERVICE_PORT", "WEBSOCKET_STREAMING_PORT", "FAKE_PORT")}
    db = f"http://127.0.0.1:{ports['DATABASE_SERVICE_PORT']}"
    ws = f"http://127.0.0.1:{ports['WEBSOCKET_STREAMING_PORT']}"
    with Launcher(tmp_path) as launch:
        run = _make_run(launch, ports, "make-run")
        for url in (db, ws):
            wait_until(
                lambda u=url: answers(f"{u}/health") or run.process.poll() is not None, 120, f"{url}/health"
            )
            assert run.process.poll() is None, run.log_tail()

        # the first price may be the REST backfill's; the feed's own follows within moments
        def live_price() -> tuple[int, Any] | None:
            answer = http("GET", f"{ws}/price/BTCUSDT")
            return answer if answer[0] == 200 and answer[1]["source"] == "websocket" else None

        status, price = wait_until(live_price, 30, "a price from the fake exchange's WebSocket feed")
        assert (status, price["symbol"], price["stale"]) == (200, "BTCUSDT", False)
        assert http("GET", f"{db}/")[1]["service"] == "database-service"
        assert http("GET", f"{ws}/")[1]["service"] == "websocket-streaming"

        second = _make_run(launch, ports, "make-run-again")
        assert second.process.wait(60) != 0
        said = [line for line in second.log_text().splitlines() if not line.startswith("make")]
        port = ports["DATABASE_SERVICE_PORT"]
        assert len(said) == 1, second.log_text()
        assert said[0].startswith(f"run: port {port} for database-service is taken by gunicorn (pid ")
        assert said[0].endswith("; stop it or set DATABASE_SERVICE_PORT")
        assert answers(f"{db}/health")  # the first one still serves

        os.killpg(run.process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's group
        try:
            run.process.wait(60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run did not stop on Ctrl-C:\n{run.log_tail()}")
        wait_until(lambda: not _session(run.process.pid), 30, "every process of make run to exit")
        assert not any(listening(p) for p in ports.values()), "a port still listens after Ctrl-C"
    assert "Traceback" not in run.log_text()
    assert (REPO / "Makefile").is_file()
