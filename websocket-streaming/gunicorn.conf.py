"""gunicorn settings for websocket-streaming: `gunicorn -c websocket-streaming/gunicorn.conf.py
"websocket_streaming:create_app()"`.

Worker model: gthread. Each SSE subscriber holds one thread for as long as it listens, so
a worker gets SSE_MAX_SUBSCRIBERS + REST_THREADS threads and /stream refuses (503) past
SSE_MAX_SUBSCRIBERS: however many streams are open, REST_THREADS threads stay free for
/price. Without REDIS_URL the book lives in process memory, so there is exactly one
worker; with Redis, WEB_CONCURRENCY workers share the book through Redis pub/sub.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from websocket_streaming.settings import DEFAULTS, SERVICE, SETTINGS, check

from shared.gunicorn_hooks import configure

_config = configure(globals(), SERVICE, defaults=DEFAULTS, settings=SETTINGS, check=check)

REST_THREADS = int(os.environ.get("REST_THREADS", "32"))
workers = int(os.environ.get("WEB_CONCURRENCY", "2")) if _config["REDIS_URL"] else 1
if not _config["REDIS_URL"] and int(os.environ.get("WEB_CONCURRENCY", "1")) > 1:
    # never silently: the operator asked for more workers than this configuration can use
    print(
        f"websocket-streaming: WEB_CONCURRENCY={os.environ['WEB_CONCURRENCY']} ignored without REDIS_URL: "
        "one worker holds the price book (and counts rate limits exactly)",
        file=sys.stderr,
    )
threads = int(os.environ.get("GUNICORN_THREADS", _config["SSE_MAX_SUBSCRIBERS"] + REST_THREADS))
SSE_CAP = min(_config["SSE_MAX_SUBSCRIBERS"], max(1, threads - min(REST_THREADS, threads // 2)))
if _config["SSE_MAX_SUBSCRIBERS"] > SSE_CAP:
    # GUNICORN_THREADS was set lower: shrink the SSE cap (the workers read it from the
    # environment) so streams can never take the threads REST needs; never silently.
    os.environ["SSE_MAX_SUBSCRIBERS"] = str(SSE_CAP)
    print(
        f"websocket-streaming: GUNICORN_THREADS={threads} caps SSE streams at {SSE_CAP} per worker "
        f"(SSE_MAX_SUBSCRIBERS={_config['SSE_MAX_SUBSCRIBERS']} asked; {threads - SSE_CAP} threads "
        "stay free for REST); raise GUNICORN_THREADS or unset it to serve more streams",
        file=sys.stderr,
    )
worker_connections = max(1000, threads * 2)
SWITCH_INTERVAL = float(os.environ.get("PYTHON_SWITCH_INTERVAL", "0.001"))
preload_app = False  # ingest threads must be created in the worker, never in the master


def post_worker_init(worker: Any) -> None:
    """Start ingest in the freshly forked worker and stop it promptly on SIGTERM."""
    from websocket_streaming import start_ingest, stop_ingest

    app = worker.wsgi
    # The reader thread must get the GIL quickly when a frame arrives while request threads
    # run: at the default 5 ms switch interval the feed-to-/price delay's p99 is ~5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL)
    worker.log.info(
        "SSE: at most %d streams in this worker (%d per client), %d threads",
        SSE_CAP,
        _config["SSE_MAX_STREAMS_PER_CLIENT"],
        threads,
    )
    start_ingest(app)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        # Close upstream and end SSE streams now, not after graceful_timeout: open streams
        # would otherwise keep the worker busy until gunicorn gives up on them.
        threading.Thread(target=stop_ingest, args=(app,), name="ws-stop").start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
