"""Settings and hooks every service's `gunicorn.conf.py` shares.

Usage, in `<service>/gunicorn.conf.py`:

    from shared.gunicorn_hooks import configure
    configure(globals(), "database-service", defaults={"PORT": 5020})
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.config import Config
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.workers.base import Worker

from shared import logger, sentry_integration
from shared.config import Check, ConfigError, Setting, exit_on_config_error, load_config, warn_lookalikes
from shared.lifecycle import shutdown
from shared.rate_limiter.host import HOST_ERRORS, HOST_STORE_ENV, HostBackend, host_store_path
from shared.secrets import Secrets, secret_values


def configure(
    namespace: MutableMapping[str, Any],
    service: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    settings: Iterable[Setting] = (),
    check: Check | None = None,
) -> dict[str, Any]:
    """Validate config (one line and exit 2 on error), then set bind, metrics dir and hooks."""
    settings = tuple(settings)
    try:
        config = load_config(service, settings=settings, defaults=defaults, check=check)
    except ConfigError as exc:
        exit_on_config_error(exc)
    warn_lookalikes(settings)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or _private_metrics_dir(service)
    namespace.update(
        bind=[_bind(config["BIND"], config["PORT"])],
        workers=int(os.environ.get("WEB_CONCURRENCY", "2")),
        worker_class="gthread",
        threads=int(os.environ.get("GUNICORN_THREADS", "4")),
        graceful_timeout=int(os.environ.get("GRACEFUL_TIMEOUT", "30")),
        timeout=60,
        keepalive=5,
        # 16 KB header lines (8190 by default): a 10 KB traceparent or tracestate starts a
        # new trace (shared/tracing.py) instead of being refused with a 400.
        limit_request_field_size=16384,
        accesslog=None,
        # gunicorn 27's control socket defaults to one path per user: several masters on a
        # host (Redis mode, tests, PM2 next to compose) would take it from each other.
        control_socket_disable=True,
        logger_class=service_logger(config["LOG_FORMAT"], Secrets(secret_values(config))),
        on_starting=lambda server: _on_starting(server, config, metrics_dir),
        on_exit=lambda server: _on_exit(metrics_dir),
        nworkers_changed=lambda server, new, old: _check_worker_change(server, config, new, old),
        post_fork=lambda server, worker: _post_fork(config),
        child_exit=_child_exit,
        worker_exit=_worker_exit,
    )
    return config


PRIVATE_METRICS_ENV = "SARDAG_PRIVATE_METRICS_DIR"  # the directory below was made for this master


def _private_metrics_dir(service: str) -> str:
    """A fresh directory only this user can enter (mkdtemp: 0700, unpredictable), named to the workers.

    A fixed path in a shared /tmp could be another user's (planted files, a symlink) and
    two masters of one service would wipe each other's metrics at start.
    """
    path = tempfile.mkdtemp(prefix=f"sardag-metrics-{service}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[PRIVATE_METRICS_ENV] = path
    return path


def _on_exit(metrics_dir: str) -> None:
    """Master exit: remove the host store, and the metrics directory if it was made for this master."""
    remove_host_store()
    if metrics_dir and os.environ.get(PRIVATE_METRICS_ENV) == metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def service_logger(fmt: str, secrets: Secrets | None = None) -> type[GunicornLogger]:
    """gunicorn's logger class writing its own lines (start, workers, signals) in LOG_FORMAT."""

    class ServiceLogger(GunicornLogger):
        def setup(self, cfg: Config) -> None:
            super().setup(cfg)
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(logger.make_formatter(fmt, secrets))

    return ServiceLogger


def _on_starting(server: Arbiter, config: Mapping[str, Any], metrics_dir: str) -> None:
    """Master, once per start: empty the metrics directory, say whether Sentry reports and
    how the rate limits are shared."""
    if metrics_dir:
        reset_metrics_dir(metrics_dir)
    logger.configure_logging(config["LOG_LEVEL"], config["LOG_FORMAT"])
    sentry_integration.announce(config["SERVICE_NAME"], config.get("SENTRY_DSN"))
    share_rate_limits(server, config)
    graceful_sigint_under_pm2(server)


def graceful_sigint_under_pm2(server: Any) -> None:
    """Under PM2, stop gracefully on SIGINT as on SIGTERM.

    PM2 (7.x) signals every app with its daemon's PM2_KILL_SIGNAL, SIGINT by default, and
    ignores an app's `kill_signal`. SIGINT is gunicorn's quick shutdown: in-flight requests
    would be cut off at every `pm2 stop`, `restart` or `delete`. PM2 names its apps `pm_id`.
    """
    if "pm_id" in os.environ:
        setattr(server, "handle_int", server.handle_term)  # noqa: B010 (an instance's handler)
        server.log.info("SIGINT stops gracefully, as SIGTERM does (started by PM2, which sends SIGINT)")


def share_rate_limits(server: Any, config: Mapping[str, Any]) -> None:
    """Make each limit exact across this master's workers, say how, or refuse to start.

    Redis is shared by every worker and instance; one worker is exact in-process. Several
    workers without Redis get one store on this host (a SQLite file under a file lock,
    shared/rate_limiter/host.py), created here, before the fork, and named to the workers
    in SARDAG_RATE_LIMIT_HOST_STORE. If it cannot be created the master stops with one
    line rather than let each worker count on its own.
    """
    workers = int(server.cfg.workers)
    os.environ.pop(HOST_STORE_ENV, None)
    if not config["RATE_LIMIT_ENABLED"]:
        server.log.info("rate limits: off (RATE_LIMIT_ENABLED=0)")
    elif config["REDIS_URL"]:
        server.log.info("rate limits: on Redis, exact across %d workers and every instance", workers)
    elif workers == 1:
        server.log.info("rate limits: in-process, exact (1 worker, no REDIS_URL)")
    else:
        path = _create_host_store(config["SERVICE_NAME"], workers)
        os.environ[HOST_STORE_ENV] = f"file://{path}"
        server.log.info("rate limits: exact across %d workers through a store on this host (%s)", workers, path)


def _create_host_store(service: str, workers: int) -> str:
    try:
        directory = tempfile.mkdtemp(prefix=f"sardag-ratelimit-{service}-")
        store = HostBackend(str(Path(directory) / "limits.sqlite"))
        len(store)  # creates the file and its table: a failure shows now, not per request
        store.close()
        return store.path
    except HOST_ERRORS as exc:
        problem = (
            f"{workers} workers without REDIS_URL need a rate-limit store on this host, which could "
            f"not be created ({exc}); set REDIS_URL, or WEB_CONCURRENCY=1, or RATE_LIMIT_ENABLED=0"
        )
        exit_on_config_error(ConfigError("WEB_CONCURRENCY", problem))
        raise  # not reached: exit_on_config_error exits


def remove_host_store() -> None:
    """Delete the host store this master created (at exit)."""
    url = os.environ.get(HOST_STORE_ENV)
    if url:
        shutil.rmtree(Path(host_store_path(url)).parent, ignore_errors=True)


def _check_worker_change(server: Any, config: Mapping[str, Any], workers: int, old: int | None) -> None:
    # TTIN past one worker, started without a shared store: never count per worker silently.
    # gunicorn also calls this from arbiter setup (old is None, at start and on HUP), before
    # on_starting creates the store: the start's own line says how limits are counted then.
    if old is None or workers <= old:
        return
    shared = config["REDIS_URL"] or os.environ.get(HOST_STORE_ENV)
    if workers > 1 and config["RATE_LIMIT_ENABLED"] and not shared:
        server.log.error(
            "rate limits: now counted per worker (%d workers, no REDIS_URL, started with one): "
            "a client may get up to %dx its limit until restarted with WEB_CONCURRENCY=%d",
            workers,
            workers,
            workers,
        )


def _post_fork(config: Mapping[str, Any]) -> None:
    use_multiprocess_values()
    # Request threads must not wait on stderr: under a threaded worker each write releases
    # the GIL while holding the handler lock (the access log alone cost /price ~20 % of
    # its requests/s); here they enqueue and one writer thread writes batches.
    logger.configure_logging(config["LOG_LEVEL"], config["LOG_FORMAT"], background=True)


def use_multiprocess_values() -> None:
    """Make metrics created from now on write to PROMETHEUS_MULTIPROC_DIR (in a worker).

    prometheus_client chooses how to store values when it is first imported. A gunicorn
    config imports the service (and so prometheus_client) before `configure` sets the
    default directory; left alone, every worker would count in memory only and /metrics,
    which reads the directory, would answer nothing. Called after fork, before the app
    exists, so only worker processes change (never a test process calling `configure`).
    """
    from prometheus_client import values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def reset_metrics_dir(path: str) -> None:
    """Empty the multiprocess metrics directory so a restart starts from zero.

    Its contents go, the directory stays: removing and re-creating it would drop a private
    directory's 0700 mode and leave a moment in which another user could create the path.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    for entry in Path(path).iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _child_exit(server: Arbiter, worker: Worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _worker_exit(server: Arbiter, worker: Worker) -> None:
    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        shutdown(app)
    logger.stop_background_logging()
