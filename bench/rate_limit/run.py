"""Rate-limiter overhead under gunicorn: bare route vs our limiter vs Flask-Limiter (moving window).

Usage (from the repository root):

    .venv/bin/python bench/rate_limit/run.py [--rounds 7] [--duration 4] [--connections 16]

One gunicorn per variant (the services' shared settings: gthread, 2 workers x 4 threads),
all started up front on loopback ports, each checked (its limiter must answer 429 on a
1/minute route) and warmed up. Then, round after round, wrk drives `/ping` of every variant
in turn (order rotated each round), so neighbours' load on a shared machine hits all
variants alike. Reported: median req/s and p99 over rounds, the median of the per-round
ratios to the bare route, server CPU per request, and the non-200 answers counted by the
servers themselves. Then µs per check of each backend without HTTP.
Redis at 127.0.0.1:6379 database 14 is flushed and used (--redis-url to change).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "tests" / "support")]

import redis  # noqa: E402
from app import DEFAULT_REDIS_URL, LIMITED, VARIANTS  # noqa: E402
from micro import print_micro, run_micro  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sardag_testing import free_port  # noqa: E402

WRK_INSTALL = "apt-get install -y wrk   (Debian/Ubuntu; macOS: brew install wrk)"
SCRUBBED_ENV_PREFIXES = ("RATE_LIMIT_", "REDIS_", "LOG_", "SENTRY_", "PROMETHEUS_", "GUNICORN_")
# name: (server variant, path, the status every answer should have)
TARGETS = {v: (v, "/ping", "200") for v in VARIANTS}
TARGETS["ours-redis-over"] = ("ours-redis", "/probe", "429")  # one client, always over its limit
# name: (baseline, goal): median over rounds of name's req/s / baseline's req/s in that round
GOALS = {
    "ours-memory": ("bare", 0.90),
    "ours-redis": ("redis-ping", 0.90),
    "ours-redis-over": ("bare", 0.85),
}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class RunResult:
    """One measured wrk session against one variant."""

    rps: float
    p99_ms: float
    wrk_errors: int  # socket errors + answers >= 400 as seen by wrk
    client_cpu: float  # wrk CPU seconds per wall second
    server_us: float  # gunicorn workers' CPU µs per request
    redis_us: float  # redis-server CPU µs per request (whoever else uses it included)


@dataclass
class VariantStats:
    """All rounds of one variant."""

    name: str
    runs: list[RunResult] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    cpu_ratios: list[float] = field(default_factory=list)
    unexpected: int = 0  # answers (counted by the server) whose status is not the target's


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7, help="rounds over all variants (default 7)")
    p.add_argument("--duration", type=int, default=4, help="measured seconds per session (default 4)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (default 2)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: 2 shared cores)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    p.add_argument("--threads", type=int, default=4, help="gthread threads per worker (default 4)")
    p.add_argument("--variants", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="FLUSHED; default db 14")
    p.add_argument("--micro-iterations", type=int, default=20_000, help="hits per micro round")
    p.add_argument("--micro-rounds", type=int, default=3, help="micro rounds (default 3)")
    p.add_argument("--skip-http", action="store_true", help="only the µs-per-check part")
    p.add_argument("--skip-micro", action="store_true", help="only the HTTP part")
    args = p.parse_args()
    args.variants = ["bare", *(v for v in dict.fromkeys(args.variants) if v != "bare")]
    args.servers = list(dict.fromkeys(TARGETS[v][0] for v in args.variants))
    return args


def require_wrk() -> str:
    """The wrk path, or exit with the install command."""
    path = shutil.which("wrk")
    if path is None:
        sys.exit(f"wrk (the HTTP load generator) is not installed; install it with:\n    {WRK_INSTALL}")
    return path


def redis_conn(url: str) -> redis.Redis:
    """A client for the bench database, or exit when Redis is unreachable."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        sys.exit(f"Redis at {url} is unreachable ({exc}); start it or pass --redis-url")
    return client


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server has used so far."""
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def server_env(args: argparse.Namespace, port: int, metrics_dir: str) -> dict[str, str]:
    """The environment of gunicorn: the same for every variant, no stray limiter settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
    env.update(
        BIND="127.0.0.1",
        PORT=str(port),
        LOG_LEVEL="WARNING",
        WEB_CONCURRENCY=str(args.workers),
        GUNICORN_THREADS=str(args.threads),
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
        BENCH_REDIS_URL=args.redis_url,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]),
    )
    return env


def worker_connections(args: argparse.Namespace) -> int:
    """Cap per worker so wrk's burst of connects cannot all land on one worker."""
    return -(-args.connections // args.workers) + args.threads


class Server:
    """A gunicorn serving one variant on a free loopback port."""

    def __init__(self, variant: str, args: argparse.Namespace, workdir: str) -> None:
        self.variant = variant
        self.port = free_port()
        self.log_path = Path(workdir) / f"gunicorn-{variant}.log"
        self.env = server_env(args, self.port, str(Path(workdir) / f"metrics-{variant}"))
        self.cwd = workdir  # so that no stray .env is read
        self.cmd = [sys.executable, "-m", "gunicorn", "-c", str(HERE / "gunicorn.conf.py")]
        self.cmd += ["--worker-connections", str(worker_connections(args))]
        self.cmd.append(f"app:create_app({variant!r})")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch gunicorn (returns at once; see wait_ready)."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=log, stderr=log)

    def stop(self) -> None:
        """Terminate gunicorn (kill it after 15 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        """One GET on a fresh connection: status and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /health until 200; raise with the log tail if gunicorn dies or hangs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.get("/health")[0] == 200:
                    return
            time.sleep(0.1)
        log = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"gunicorn for {self.variant} did not become ready:\n{log}")

    def check_limiter_engaged(self) -> None:
        """/probe (1/minute): limited variants must answer at least one 429 of 3, bare none."""
        statuses = [self.get("/probe")[0] for _ in range(3)]
        expect_429 = self.variant in LIMITED
        if (429 in statuses) != expect_429 or not set(statuses) <= {200, 429}:
            raise RuntimeError(f"{self.variant}: /probe answered {statuses}; limiter not as expected")

    def worker_cpu(self) -> float:
        """CPU seconds used so far by the live workers."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        total = 0
        for pid in children:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLOCK_TICKS

    def statuses(self, rule: str) -> dict[str, int]:
        """Server-side count of `rule`'s answers by status over all workers (Prometheus)."""
        counts: dict[str, int] = {}
        for family in text_string_to_metric_families(self.get("/metrics")[1]):
            for sample in family.samples:
                if sample.name.endswith("http_requests_total") and sample.labels.get("rule") == rule:
                    status = sample.labels["status"]
                    counts[status] = counts.get(status, 0) + int(sample.value)
        return counts


def run_wrk(
    wrk: str, url: str, args: argparse.Namespace, seconds: int, path: str = "/ping", script: str | None = None
) -> tuple[dict[str, int], float]:
    """Run wrk against `path`; return its JSON summary and its CPU seconds."""
    cmd = [wrk, f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "5s"]
    cmd += ["-s", str(HERE / (script or "report.lua")), f"{url}{path}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return json.loads(line.removeprefix("BENCH_JSON ")), cpu


def measure(server: Server, path: str, wrk: str, args: argparse.Namespace, rds: redis.Redis) -> RunResult:
    """One wrk session on `path`, with the server's and Redis' CPU time over it."""
    cpu0, redis0 = server.worker_cpu(), redis_cpu(rds)
    summary, client_cpu = run_wrk(wrk, server.url, args, args.duration, path=path)
    cpu1, redis1 = server.worker_cpu(), redis_cpu(rds)
    seconds, requests = summary["duration_us"] / 1e6, max(1, summary["requests"])
    return RunResult(
        rps=requests / seconds,
        p99_ms=summary["p99_us"] / 1000,
        wrk_errors=summary["status_errors"] + summary["socket_errors"],
        client_cpu=client_cpu / seconds,
        server_us=(cpu1 - cpu0) / requests * 1e6,
        redis_us=(redis1 - redis0) / requests * 1e6,
    )


def start_servers(servers: list[Server], wrk: str, args: argparse.Namespace) -> None:
    """Start every variant, wait, check its limiter, warm it up."""
    for server in servers:
        server.start()
    for server in servers:
        server.wait_ready()
        server.check_limiter_engaged()
        if args.warmup > 0:
            run_wrk(wrk, server.url, args, args.warmup)


def run_rounds(servers: dict[str, Server], wrk: str, args: argparse.Namespace) -> list[VariantStats]:
    """Every round drives every target once, order rotated; ratios against that round's bare."""
    rds = redis_conn(args.redis_url)
    stats = {name: VariantStats(name) for name in args.variants}
    for rnd in range(args.rounds):
        shift = rnd % len(args.variants)
        for name in args.variants[shift:] + args.variants[:shift]:
            variant, path, _ = TARGETS[name]
            result = measure(servers[variant], path, wrk, args, rds)
            stats[name].runs.append(result)
            print(
                f"  round {rnd + 1} {name:<21} {result.rps:7.0f} req/s  p99 {result.p99_ms:6.2f} ms"
                f"  server {result.server_us:5.0f} µs/req",
                flush=True,
            )
        bare = stats["bare"].runs[-1]
        for s in stats.values():
            s.ratios.append(s.runs[-1].rps / bare.rps)
            s.cpu_ratios.append(bare.server_us / s.runs[-1].server_us)
    for name, s in stats.items():
        variant, path, expected = TARGETS[name]
        counts = servers[variant].statuses(path)
        s.unexpected = sum(n for status, n in counts.items() if status != expected)
    return list(stats.values())


def run_http(args: argparse.Namespace) -> list[VariantStats]:
    """Start the servers, run the rounds, stop the servers."""
    wrk = require_wrk()
    redis_conn(args.redis_url).flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-rate-limit-") as workdir:
        servers = {v: Server(v, args, workdir) for v in args.servers}
        try:
            start_servers(list(servers.values()), wrk, args)
            return run_rounds(servers, wrk, args)
        finally:
            for server in servers.values():
                server.stop()
            redis_conn(args.redis_url).flushdb()


def print_table(stats: list[VariantStats], args: argparse.Namespace) -> None:
    """The HTTP table and the goal verdicts."""
    print(
        f"\nHTTP: gunicorn {args.workers} workers x gthread {args.threads} threads, "
        f"wrk -t{args.wrk_threads} -c{args.connections} keep-alive, {args.rounds} rounds x "
        f"{args.duration} s per target; medians over rounds; Redis {args.redis_url}"
    )
    print(
        f"{'target':<16} {'path':<7} {'req/s':>7} {'p99 ms':>7} {'ratio':>6} {'cpu-ratio':>9} "
        f"{'srv µs/req':>10} {'redis µs/req':>12} {'unexpected':>10} {'wrk cpu':>7}  per-round req/s"
    )
    for s in stats:
        med = statistics.median
        rounds = " ".join(f"{r.rps:.0f}" for r in s.runs)
        print(
            f"{s.name:<16} {TARGETS[s.name][1]:<7} {med(r.rps for r in s.runs):>7.0f} "
            f"{med(r.p99_ms for r in s.runs):>7.2f} {med(s.ratios):>6.2f} {med(s.cpu_ratios):>9.2f} "
            f"{med(r.server_us for r in s.runs):>10.0f} {med(r.redis_us for r in s.runs):>12.1f} "
            f"{s.unexpected:>10} {med(r.client_cpu for r in s.runs):>7.0%}  {rounds}"
        )
    print_goals(stats)


def print_goals(stats: list[VariantStats]) -> None:
    """One line per goal: the median over rounds of the per-round ratio to its baseline."""
    by_name = {s.name: s for s in stats}
    for name, (baseline, goal) in GOALS.items():
        if name not in by_name or baseline not in by_name:
            continue
        pairs = zip(by_name[name].runs, by_name[baseline].runs, strict=True)
        ratio = statistics.median(r.rps / b.rps for r, b in pairs)
        pairs = zip(by_name[name].runs, by_name[baseline].runs, strict=True)
        cpu = statistics.median(b.server_us / r.server_us for r, b in pairs)
        verdict = "met" if ratio >= goal else "NOT met"
        print(f"goal: {name} >= {goal:.2f} x {baseline} req/s: {ratio:.3f} -> {verdict} (by CPU: {cpu:.3f})")


def main() -> None:
    """Run the HTTP benchmark, then the µs-per-check benchmark."""
    args = parse_args()
    started = time.monotonic()
    if not args.skip_http:
        print_table(run_http(args), args)
    if not args.skip_micro:
        redis_conn(args.redis_url)
        results = run_micro(args.redis_url, args.micro_iterations, args.micro_rounds)
        print_micro(results, args.micro_iterations)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
