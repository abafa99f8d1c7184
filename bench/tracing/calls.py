"""Python function calls per request that tracing adds: a count machine load cannot move.

One process per (route, build) builds the service's app as a gunicorn worker would and
calls it as WSGI, without a server, under cProfile: the calls per request of `no otel`,
`off`, `unsampled` (on, ratio 0: every request dropped by HeadSampler) and `sampled` (on,
ratio 1), exporting to a local sink in another process. Calls are not all of equal cost,
but the count says where the work is and, unlike time, is the same on a loaded machine.

    .venv/bin/python bench/tracing/calls.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1].parent
sys.path[:0] = [str(ROOT), str(ROOT / "database-service"), str(ROOT / "websocket-streaming")]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "tools" / "fake-exchange")]

BUILDS = {"no otel": None, "off": None, "unsampled": "0.0", "sampled": "1.0"}
SAVE_BODY = (
    b'{"symbol":"BTCUSDT","action":"BUY","price":101.5,"confidence":0.5,"strategy":"bench","timeframe":"1m"}'
)
ENVIRON = {
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "5020",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "127.0.0.1:5020",
    "HTTP_USER_AGENT": "wrk",
    "wsgi.url_scheme": "http",
    "wsgi.multithread": True,
    "wsgi.multiprocess": True,
}


def measure(route: str, requests: int) -> dict[str, float]:
    """In this process (environment already set): calls and CPU us per request of `route`."""
    if route == "/price":
        from websocket_streaming import create_app

        environ = {**ENVIRON, "REQUEST_METHOD": "GET", "PATH_INFO": "/price/BTCUSDT"}
    else:
        from database_service import create_app

        environ = {**ENVIRON, "REQUEST_METHOD": "POST", "PATH_INFO": "/signals/save"}
        environ.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(SAVE_BODY)))
    app = create_app()
    statuses: list[str] = []

    def one() -> None:
        answer = app({**environ, "wsgi.input": io.BytesIO(SAVE_BODY), "wsgi.errors": sys.stderr}, start)
        b"".join(answer)
        answer.close()  # type: ignore[attr-defined]

    def start(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status[:3])

    deadline = time.monotonic() + 15
    while (
        not statuses or statuses[-1] != statuses[0] or statuses[-1] >= "300"
    ) and time.monotonic() < deadline:
        one()  # /price answers 503 until the feed's first price
        time.sleep(0.01)
    for _ in range(200):
        one()
    statuses.clear()
    profile = cProfile.Profile()
    started = time.process_time()
    profile.enable()
    for _ in range(requests):
        one()
    profile.disable()
    cpu = (time.process_time() - started) / requests * 1e6
    if set(statuses) - {"200", "201"}:
        raise SystemExit(f"{route}: answers {sorted(set(statuses))}")
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls = sum(entry[1] for entry in stats.values())
    per_function = {_where(key): entry[1] / requests for key, entry in stats.items()}
    return {"calls": calls / requests, "cpu_us_profiled": cpu, "functions": per_function}


def _where(key: tuple[str, int, str]) -> str:
    """`package/module.py:line(function)`, the path cut after site-packages or the repository."""
    path, line, name = key
    for marker in ("site-packages/", f"{ROOT}/"):
        path = path.split(marker, 1)[-1]
    return f"{path}:{line}({name})"


def most_added(figures: dict[str, Any], base: dict[str, Any], top: int) -> list[tuple[float, str]]:
    """The `top` functions whose calls per request `figures` adds most to `base`."""
    mine, theirs = figures["functions"], base["functions"]
    diff = [(calls - theirs.get(where, 0.0), where) for where, calls in mine.items()]
    return sorted((d for d in diff if d[0] >= 0.5), reverse=True)[:top]


def child(route: str, requests: int) -> None:
    """Run as the child process: print the JSON figures."""
    print(json.dumps(measure(route, requests)))
    sys.stdout.flush()
    os._exit(0)  # the feed's and exporter's threads need no orderly stop here


def run_build(route: str, build: str, requests: int, env: dict[str, str], blocker: Path) -> dict[str, float]:
    """Start one child for (route, build); its figures."""
    ratio = BUILDS[build]
    full = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(sys.path[:3])}
    if build == "no otel":
        full["PYTHONPATH"] = f"{blocker}{os.pathsep}{full['PYTHONPATH']}"
    if ratio is not None:
        full.update(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG=ratio)
    else:
        full.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    argv = [sys.executable, __file__, "--child", route, "--requests", str(requests)]
    done = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{route} ({build}) failed:\n{done.stderr[-3000:]}")
    out = done.stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    """Every (route, build) in its own process; print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--postgres", default=os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--top", type=int, default=0, help="list the N functions each build adds most")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.requests)
        return
    from fake_exchange import FakeExchange
    from run import BLOCKER, otlp_sink
    from sardag_testing import scratch_postgres

    tmp = Path(tempfile.mkdtemp(prefix="bench-tracing-calls-"))
    (tmp / "sitecustomize.py").write_text(BLOCKER)
    common = {
        "REDIS_URL": args.redis_url,
        "RATE_LIMIT_DEFAULT": "1000000000",
        "LOG_LEVEL": "INFO",
        "SENTRY_DSN": "",
    }
    print("| route | build | Python calls per request | added to off | CPU us per request (profiled) |")
    print("| --- | --- | ---: | ---: | ---: |")
    with (
        FakeExchange(rate=2.0) as exchange,
        otlp_sink() as sink,
        scratch_postgres(args.postgres, "bench_calls") as db,
    ):
        routes = {
            "/price": {
                "SYMBOLS": "BTCUSDT",
                "BINANCE_WS_URL": exchange.ws_url,
                "BINANCE_REST_URL": exchange.rest_url,
                "REDIS_KEY_PREFIX": f"bench-calls-{os.getpid()}:",
                "RATE_LIMIT_PRICE": "1000000000",
            },
            "POST /signals/save": {"DATABASE_URL": db, "RATE_LIMIT_SIGNALS_SAVE": "1000000000"},
        }
        for route, env in routes.items():
            found = {
                build: run_build(
                    route, build, args.requests, {**common, **env, "OTEL_EXPORTER_OTLP_ENDPOINT": sink}, tmp
                )
                for build in BUILDS
            }
            for build, figures in found.items():
                added = figures["calls"] - found["off"]["calls"]
                calls, cpu = figures["calls"], figures["cpu_us_profiled"]
                print(f"| {route} | {build} | {calls:.0f} | {added:+.0f} | {cpu:.0f} |")
            for build in ("unsampled", "sampled") if args.top else ():
                print(f"\n{route}, {build}: the functions it adds most to off (calls per request)")
                for count, where in most_added(found[build], found["off"], args.top):
                    print(f"  {count:7.1f}  {where}")
                print()


if __name__ == "__main__":
    main()
