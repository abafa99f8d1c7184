"""gunicorn settings for database-service.

Run from the repository root:
    gunicorn -c database-service/gunicorn.conf.py "database_service:create_app()"

Binds BIND:PORT (default 127.0.0.1:5020), WEB_CONCURRENCY workers (default 2) of the gthread
class with 4 threads. Rate limits stay exact across the workers: on Redis with REDIS_URL,
else through a store the master creates on this host (shared/gunicorn_hooks.py says which in
the start-up log; two workers serve ~1.5x the reads of one on SQLite, bench/rate_limit/
workers.py). The shared hooks validate the configuration before any worker starts
(one line and exit 2 on a mistake), reset the Prometheus multiprocess directory, mark dead
workers, and run the app's shutdown callbacks on worker exit, which closes the PostgreSQL
pool. Each worker freezes (gc.freeze) what it loaded before serving. SIGTERM stops
accepting connections and lets in-flight requests finish within graceful_timeout
(GRACEFUL_TIMEOUT, default 30 s).
"""

from __future__ import annotations

import gc
from typing import Any

from database_service.settings import DEFAULTS, SERVICE, SETTINGS

from shared.gunicorn_hooks import configure

configure(globals(), SERVICE, defaults=DEFAULTS, settings=SETTINGS)


def post_worker_init(worker: Any) -> None:
    """Leave the loaded app out of every later collection (gc.freeze)."""
    # A batch of 1000 signals keeps thousands of tracked objects alive while it is built, so
    # they reach the oldest generation and full collections follow every few batches; each
    # scanned the app's own objects too (about 80,000), which cost a batch 1 ms, 7 % of its
    # time in process. The start-up's garbage is collected first.
    gc.collect()
    gc.freeze()
