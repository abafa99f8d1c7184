"""Where the ingest goals stop: the bench's baselines beside what HTTP alone allows.

    python bench/database/limits.py            # 5 rounds, 1000 single saves and 20 batches each

Same database, gunicorn settings and clients as bench/database/run.py (no preload). Rounds
alternate; the medians of signals/s and their ratios to the baselines are printed:
- single saves: the service, the minimal route (run.py's baseline), and a raw psycopg2
  loop of INSERT ... RETURNING + commit from 4 threads (no HTTP);
- batches of 1000: the service (full answer, and `Prefer: return=minimal`), COPY (run.py's
  baseline), and bench/database/copy_route_app.py doing COPY behind HTTP with a tiny answer,
  with a tiny answer and the service's validation (the ceiling of return=minimal), with the
  full answer of 1000 signals, and with the full answer and the service's validation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))  # sardag_testing

import run
from client import concurrent_posts, run_threads
from database_service.storage import open_storage
from minimal_app import INSERT
from sardag_testing import free_port, scratch_postgres

FIELDS = ("symbol", "action", "price", "confidence", "strategy", "timeframe")
PROBES = {  # copy_route_app.py: name -> query
    "COPY route, tiny answer": "",
    "COPY route, tiny answer, validation": "?validate=1",
    "COPY route, full answer": "?answer=1",
    "COPY route, full answer, validation": "?answer=1&validate=1",
}


def raw_singles(url: str, bodies: list[dict[str, object]], clients: int) -> float:
    """INSERT ... RETURNING and commit per row from `clients` threads, no HTTP; rows/s."""
    shares = [bodies[i::clients] for i in range(clients)]
    connections = [psycopg2.connect(url) for _ in shares]

    def work(conn: psycopg2.extensions.connection, share: list[dict[str, object]]) -> None:
        for body in share:
            with conn.cursor() as cur:
                cur.execute(INSERT, [body[k] for k in FIELDS])
                cur.fetchone()
            conn.commit()

    elapsed = run_threads(
        [threading.Thread(target=work, args=p) for p in zip(connections, shares, strict=True)]
    )
    for conn in connections:
        conn.close()
    return len(bodies) / elapsed


def main() -> int:
    """Measure every side per round; print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    workdir = run.ROOT / "bench/results"
    workdir.mkdir(parents=True, exist_ok=True)
    with scratch_postgres(args.postgres, "sardag_limits") as url:
        storage = open_storage(url)
        storage.migrate()
        storage.close()
        ports = [free_port() for _ in range(3)]
        servers = [
            run.start_gunicorn(
                url,
                "",
                ports[0],
                workdir,
                run.ROOT / "database-service/gunicorn.conf.py",
                "database_service:create_app()",
            ),
            run.start_gunicorn(
                url, "", ports[1], workdir, run.HERE / "gunicorn.conf.py", "minimal_app:create_app()"
            ),
            run.start_gunicorn(
                url, "", ports[2], workdir, run.HERE / "gunicorn.conf.py", "copy_route_app:create_app()"
            ),
        ]
        try:
            rates = measure(args, url, ports)
        finally:
            for server in servers:
                run.stop(server)
    med = {name: statistics.median(values) for name, values in rates.items()}
    width = max(map(len, med))
    for name, value in med.items():
        base = "minimal" if name in {"single", "minimal", "raw psycopg2 INSERT+commit"} else "COPY"
        print(f"{name:<{width}}  {value:>9,.0f}/s  {value / med[base]:5.2f} of {base}")
    return 0


def measure(args: argparse.Namespace, url: str, ports: list[int]) -> dict[str, list[float]]:
    """Per round, every side in turn (signals/s)."""
    service, minimal, probe = ports
    names = (
        "single",
        "minimal",
        "raw psycopg2 INSERT+commit",
        "batches",
        "batches return=minimal",
        "COPY",
        *PROBES,
    )
    rates: dict[str, list[float]] = {name: [] for name in names}
    for rnd in range(args.rounds):
        singles = [run.signal_body(rnd * 1_000_000 + i) for i in range(1000)]
        batches = [[run.signal_body(rnd * 1_000_000 + b * 1000 + i) for i in range(1000)] for b in range(20)]
        rates["single"].append(concurrent_posts(service, "/signals/save", singles, args.clients))
        rates["minimal"].append(concurrent_posts(minimal, "/signals/save", singles, args.clients))
        rates["raw psycopg2 INSERT+commit"].append(raw_singles(url, singles, args.clients))
        rates["batches"].append(concurrent_posts(service, "/signals/save", batches, args.clients) * 1000)
        answered = concurrent_posts(service, "/signals/save", batches, args.clients, run.MINIMAL) * 1000
        rates["batches return=minimal"].append(answered)
        rates["COPY"].append(run.copy_rate(url, batches, args.clients))
        for name, query in PROBES.items():
            rates[name].append(concurrent_posts(probe, "/signals/save" + query, batches, args.clients) * 1000)
        print(f"  round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in rates.items()), flush=True)
    return rates


if __name__ == "__main__":
    sys.exit(main())
