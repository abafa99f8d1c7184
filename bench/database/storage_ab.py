"""The storage fast paths of another revision against this tree, in process, on PostgreSQL.

    python bench/database/storage_ab.py --base b9a0676      # 4 rounds, alternating order

No HTTP: each side (a worktree of `--base`, checked out for the run and removed after, and
this tree) runs in a subprocess importing its own database_service, on the same scratch
database, round after round in alternating order. Per side and path the median time of
one call, then the medians over rounds and candidate / base (below 1: the candidate is
faster): a batch of 1000 signals, an unkeyed and a keyed single save, a history page of
1000. For refactorings that must not slow the fast paths.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def measure(url: str) -> dict[str, float]:
    """Milliseconds per call of each path, with the database_service on sys.path."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from database_service.domain import new_signal
    from database_service.signals import BATCH
    from database_service.storage import SignalFilter, open_storage
    from run import signal_body

    storage = open_storage(url)
    storage.migrate()
    body = json.loads(json.dumps([signal_body(i) for i in range(1000)]), parse_float=Decimal)
    rows = [new_signal(s, 1_700_000_000_000_000) for s in BATCH.validate_python(body)]

    def keyed() -> None:
        storage.save_signals([replace(rows[0], client_id=f"ab-{time.time_ns()}")])

    result = {
        "batch of 1000": _median(lambda: storage.save_signals(rows), 15),
        "single save": _median(lambda: storage.save_signals(rows[:1]), 50),
        "keyed single save": _median(keyed, 50),
        "history page of 1000": _median(lambda: storage.signal_history(SignalFilter(), None, 1000), 15),
    }
    storage.close()
    return result


def _median(call: object, times: int) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1000


def side(tree: Path, url: str) -> dict[str, float]:
    """One round of one side, in a subprocess importing the tree's own packages."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "database-service"), str(tree)])}
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main() -> int:
    """Check out --base, run both sides in alternating rounds, print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--postgres", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one side's round
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    if not args.base:
        parser.error("--base is required")
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from sardag_testing import scratch_postgres

    with tempfile.TemporaryDirectory() as tmp, scratch_postgres(args.postgres, "sardag_ab") as url:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.base], check=True
        )
        try:
            rounds: dict[str, list[dict[str, float]]] = {"base": [], "candidate": []}
            for rnd in range(args.rounds):
                order = [("base", base), ("candidate", ROOT)]
                for name, tree in order if rnd % 2 == 0 else order[::-1]:
                    rounds[name].append(side(tree, url))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True)
    print(f"base {args.base} against this tree, {args.rounds} rounds, medians of milliseconds per call")
    for path in rounds["base"][0]:
        before = statistics.median(r[path] for r in rounds["base"])
        after = statistics.median(r[path] for r in rounds["candidate"])
        print(f"{path:<22} base {before:8.2f}  candidate {after:8.2f}  candidate/base {after / before:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
