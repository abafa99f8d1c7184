"""Where a dropped `/price` request's cost is: servers of bench-only variants side by side.

Each variant is a build of `run.py` (`off` or `0 %`) with a `sitecustomize` that patches one
piece away; two servers of each run at once and are loaded in turn with wrk round after
round (rotating order). Printed: each server's median worker CPU per request and its rounds.

- `off`, `0 %`: as in run.py;
- `off+imports`: tracing off, but the SDK, the exporter and the instrumentations imported;
- `0 %-instrumentations`: the psycopg2, redis and requests instrumentations not installed;
- `0 %-log ids`: no trace ids in log lines;
- `0 %-head`: HeadSampler passes every request straight to the app (no sampling decision,
  no span or context; the Flask instrumentation's hooks still stand aside).

    .venv/bin/python bench/tracing/variants.py [--rounds 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "tools" / "fake-exchange")]

import run  # noqa: E402 (bench/tracing/run.py, beside this file)
from fake_exchange import FakeExchange  # noqa: E402
from sardag_testing.processes import SOURCE_PATH, Launcher  # noqa: E402

PATCHES = {
    "off+imports": "import shared.tracing_sdk\n",
    "0 %-instrumentations": "import shared.tracing_sdk as t\nt._instrument_libraries = lambda: None\n",
    "0 %-log ids": "import shared.logger as log\nlog.add_trace_ids = lambda fields: None\n",
    "0 %-head": """import contextlib
import shared.tracing_sdk as t
from shared.tracing import NOOP_SPAN


def call(self, environ, start_response):
    untraced = t._UNTRACED.set(True)
    try:
        return self.plain(environ, start_response)
    finally:
        t._UNTRACED.reset(untraced)


t.HeadSampler.__call__ = call
_none = contextlib.nullcontext(NOOP_SPAN)
t.Backend.span = lambda self, *args: _none
""",
}
VARIANTS = ("off", "0 %", *PATCHES)


def start(
    launcher: Launcher, tmp: Path, exchange: FakeExchange, sink: str
) -> dict[tuple[str, str], run.Running]:
    """Two servers of every variant, each its own Redis namespace."""
    servers: dict[tuple[str, str], run.Running] = {}
    for copy in (1, 2):
        for variant in VARIANTS:
            site = []
            if variant in PATCHES:
                site = [tmp / str(VARIANTS.index(variant))]
                site[0].mkdir(exist_ok=True)
                (site[0] / "sitecustomize.py").write_text(PATCHES[variant])
            env = {
                "REDIS_URL": "redis://127.0.0.1:6379/9",
                "RATE_LIMIT_DEFAULT": "1000000000",
                "RATE_LIMIT_PRICE": "1000000000",
                "SYMBOLS": "BTCUSDT",
                "BINANCE_WS_URL": exchange.ws_url,
                "BINANCE_REST_URL": exchange.rest_url,
                "REDIS_KEY_PREFIX": f"bench-variants-{os.getpid()}-{len(servers)}:",
                "LOG_LEVEL": "INFO",
                **run.build_env("0 %" if variant.startswith("0 %") else "off", sink),
            }
            servers[(variant, str(copy))] = launcher.gunicorn(
                "websocket-streaming", workers=2, wait=False, pythonpath=[*site, *SOURCE_PATH], **env
            )
    for running in servers.values():
        launcher.wait_healthy(running, timeout=90)
    return servers


def main() -> None:
    """Start the servers, load them in turn round after round, print each one's median."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-variants-"))
    with FakeExchange(rate=2.0) as exchange, run.otlp_sink() as sink, Launcher(tmp) as launcher:
        servers = start(launcher, tmp, exchange, sink)
        for running in servers.values():
            run.wrk(running.url + "/price/BTCUSDT", 1)
        cpu: dict[tuple[str, str], list[float]] = {key: [] for key in servers}
        paths = {key: (running, "/price/BTCUSDT") for key, running in servers.items()}
        for n in range(args.rounds):
            for key, (_, per_request) in run.load_round(paths, n, args.seconds).items():
                cpu[key].append(per_request * 1e6)
            print(f"round {n + 1}/{args.rounds} done", file=sys.stderr)
    print("| variant | server | worker CPU us per request (median) | rounds |")
    print("| --- | --- | ---: | --- |")
    for (variant, copy), found in sorted(cpu.items(), key=lambda item: VARIANTS.index(item[0][0])):
        rounds = ", ".join(f"{value:.0f}" for value in sorted(found))
        print(f"| {variant} | {copy} | {statistics.median(found):.0f} | {rounds} |")


if __name__ == "__main__":
    main()
