"""Without Redis: one worker, or two sharing a host store? database-service on SQLite, measured.

Usage (from the repository root):

    .venv/bin/python bench/rate_limit/workers.py [--rounds 5] [--duration 3]

database-service under its own gunicorn.conf.py on SQLite, no REDIS_URL, in four variants
started up front: one worker x 8 threads and two workers x 4 threads, each with limiting on
(limits raised far above the load: the one worker counts in-process, the two share the host
store that the gunicorn hooks create) and off (limits off: what the worker count alone
gives). Rounds drive GET /signals/history?limit=20 and POST /signals/save of every
variant in turn with wrk (order rotated); ratios are to one worker with limits on, in the
same round. Then µs per check of the in-process and the host store without HTTP, alone and
with two processes deciding at once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "tests" / "support")]

from run import CLOCK_TICKS, SCRUBBED_ENV_PREFIXES, require_wrk, run_wrk  # noqa: E402
from sardag_testing import free_port  # noqa: E402

from shared.rate_limiter import HostBackend, MemoryBackend  # noqa: E402

HIGH = str(100_000_000)
VARIANTS = {  # name: (workers, threads, limits on)
    "1 worker x 8, limits": (1, 8, True),
    "2 workers x 4, host store": (2, 4, True),
    "1 worker x 8, no limits": (1, 8, False),
    "2 workers x 4, no limits": (2, 4, False),
}
ROUTES = {"history": ("/signals/history?limit=20", None), "save": ("/signals/save", "save.lua")}


@dataclass
class Service:
    """One database-service gunicorn on its own SQLite file."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def worker_cpu(self) -> float:
        """CPU seconds used so far by the live workers."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        total = 0
        for pid in children:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS


def start(name: str, workdir: Path) -> Service:
    """Start one variant (its own SQLite file, no Redis)."""
    workers, threads, limits = VARIANTS[name]
    port = free_port()
    folder = workdir / f"v{port}"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith((*SCRUBBED_ENV_PREFIXES, "API_KEY"))}
    env.update(
        DATABASE_URL=f"sqlite:///{folder / 'sardag.db'}",
        PORT=str(port),
        BIND="127.0.0.1",
        WEB_CONCURRENCY=str(workers),
        GUNICORN_THREADS=str(threads),
        RATE_LIMIT_ENABLED="1" if limits else "0",
        RATE_LIMIT_SIGNALS_HISTORY=HIGH,
        RATE_LIMIT_SIGNALS_SAVE=HIGH,
        LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"),
    )
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "database-service/gunicorn.conf.py")]
    cmd.append("database_service:create_app()")
    log = (folder / "gunicorn.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Service(name, proc, port)


def wait_ready(service: Service) -> None:
    """Poll /health, then seed 2,000 signals so history pages are real."""
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{service.url}/health", timeout=2).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        raise RuntimeError(f"{service.name} did not start")
    body = ",".join(['{"symbol":"BTCUSDT","action":"SELL","price":99.5}'] * 1000).encode()
    for _ in range(2):
        request = urllib.request.Request(
            f"{service.url}/signals/save", data=b"[" + body + b"]", headers={"Content-Type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=30).close()


def measure(service: Service, wrk: str, route: str, args: argparse.Namespace) -> tuple[float, float]:
    """One wrk session on `route`: requests/s and worker CPU µs per request."""
    path, script = ROUTES[route]
    cpu0 = service.worker_cpu()
    summary, _ = run_wrk(wrk, service.url, args, args.duration, path=path, script=script)
    requests = max(1, summary["requests"])
    if summary["status_errors"] or summary["socket_errors"]:
        raise RuntimeError(f"{service.name} {route}: {summary}")
    return requests / (summary["duration_us"] / 1e6), (service.worker_cpu() - cpu0) / requests * 1e6


Results = dict[tuple[str, str], list[tuple[float, float, float]]]


def run_http(args: argparse.Namespace) -> Results:
    """Rounds over every variant and route; (req/s, ratio to the first variant, CPU µs/req)."""
    wrk = require_wrk()
    results: Results = {}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as workdir:
        services = [start(name, Path(workdir)) for name in VARIANTS]
        try:
            for service in services:
                wait_ready(service)
                for route in ROUTES:
                    run_wrk(wrk, service.url, args, 1, path=ROUTES[route][0], script=ROUTES[route][1])
            for rnd in range(args.rounds):
                order = services[rnd % len(services) :] + services[: rnd % len(services)]
                for route in ROUTES:
                    got = {s.name: measure(s, wrk, route, args) for s in order}
                    base = got[services[0].name][0]
                    for name, (rps, cpu) in got.items():
                        results.setdefault((name, route), []).append((rps, rps / base, cpu))
                print(f"  round {rnd + 1} done", flush=True)
        finally:
            for service in services:
                service.proc.terminate()
                service.proc.wait(30)
    return results


def print_http(results: Results, args: argparse.Namespace) -> None:
    """Medians per variant and route."""
    load = f"wrk -t1 -c{args.connections}, {args.rounds} rounds x {args.duration} s"
    print(f"\ndatabase-service on SQLite, {load}")
    print(f"{'variant':<28} {'route':<8} {'req/s':>7} {'ratio':>6} {'cpu µs/req':>10}  per-round req/s")
    for (name, route), runs in results.items():
        med = statistics.median
        rounds = " ".join(f"{r[0]:.0f}" for r in runs)
        print(
            f"{name:<28} {route:<8} {med(r[0] for r in runs):>7.0f} {med(r[1] for r in runs):>6.2f} "
            f"{med(r[2] for r in runs):>10.0f}  {rounds}"
        )


def time_hits(backend: MemoryBackend | HostBackend, iterations: int, tag: str) -> float:
    """µs per admitted check, spread over 100 keys (each stays under its limit of 300)."""
    start = time.perf_counter()
    for i in range(iterations):
        backend.hit(f"{tag}:10.0.0.{i % 100}", 300, 60.0)
    return (time.perf_counter() - start) / iterations * 1e6


def _contender(path: str, iterations: int, tag: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put(time_hits(HostBackend(path), iterations, tag))


def run_micro(iterations: int) -> None:
    """µs per check: in-process, host store alone, host store with two processes at once."""
    with tempfile.TemporaryDirectory(prefix="bench-host-store-") as workdir:
        path = str(Path(workdir) / "limits.sqlite")
        memory = time_hits(MemoryBackend(), iterations, "m")
        alone = time_hits(HostBackend(path), iterations, "a")
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        procs = [multiprocessing.Process(target=_contender, args=(path, iterations, t, queue)) for t in "ab"]
        for proc in procs:
            proc.start()
        both = [queue.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join()
    print(f"\nµs per admitted check without HTTP ({iterations} hits over 100 keys)")
    print(f"  in-process (MemoryBackend)               {memory:7.1f}")
    print(f"  host store, one process                  {alone:7.1f}")
    print(f"  host store, two processes at once (each) {statistics.mean(both):7.1f}")


def main() -> None:
    """HTTP variants, then the store micro-benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=3)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--micro-iterations", type=int, default=20_000)
    args = p.parse_args()
    started = time.monotonic()
    print_http(run_http(args), args)
    run_micro(args.micro_iterations)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
