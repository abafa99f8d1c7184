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
pool. SIGTERM stops accepting connections and lets in-flight requests finish within
graceful_timeout (GRACEFUL_TIMEOUT, default 30 s).
"""

from __future__ import annotations

from database_service.settings import DEFAULTS, SERVICE, SETTINGS

from shared.gunicorn_hooks import configure

configure(globals(), SERVICE, defaults=DEFAULTS, settings=SETTINGS)
