"""Sentry error reporting: off without a DSN, never a crash, secrets scrubbed."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask

from shared.secrets import Secrets, app_secrets

EXTENSION = "sardag_sentry"
SENSITIVE_HEADERS = frozenset({"x-api-key", "authorization", "cookie", "proxy-authorization"})
FILTERED = "[Filtered]"
# Set by the gunicorn master once it said whether Sentry reports: its workers stay quiet.
ANNOUNCED_ENV = "SARDAG_SENTRY_ANNOUNCED"
log = logging.getLogger("shared.sentry")

if TYPE_CHECKING:
    from sentry_sdk._types import Event, Hint

try:
    import sentry_sdk
except ImportError:  # optional at run time: the services work without it
    sentry_sdk = None  # type: ignore[assignment]


def scrub_event(event: Event, hint: Hint | None = None, secrets: Secrets | None = None) -> Event:
    """Replace credentials in the event's request headers (and cookies), then mask every
    known secret anywhere in the event (messages, stack locals, breadcrumbs) before sending."""
    request = event.get("request") or {}
    headers = request.get("headers")
    if isinstance(headers, dict):
        for name in list(headers):
            if name.lower() in SENSITIVE_HEADERS:
                headers[name] = FILTERED
    elif isinstance(headers, list):
        request["headers"] = [[k, FILTERED if str(k).lower() in SENSITIVE_HEADERS else v] for k, v in headers]
    if "cookies" in request:
        request["cookies"] = FILTERED
    if not secrets:
        return event
    masked: Event = secrets.mask_deep(event)
    return masked


def init_sentry(
    service: str,
    environment: str | None = None,
    release: str | None = None,
    *,
    dsn: str | None = None,
    traces_sample_rate: float = 0.0,
    secrets: Secrets | None = None,
    quiet: bool = False,
    **options: Any,
) -> bool:
    """Start Sentry for `service`; return False (logged unless `quiet`) when off or misconfigured."""
    dsn = dsn if dsn is not None else os.environ.get("SENTRY_DSN")
    problem = _missing(dsn)
    if problem is None and dsn:
        problem = _start(service, dsn, environment, release, traces_sample_rate, options, secrets)
    if problem is not None:
        if not quiet:
            log.log(*problem)
        return False
    sentry_sdk.set_tag("service", service)
    if not quiet:
        log.info("sentry enabled for %s", service)
    return True


def announce(service: str, dsn: str | None) -> None:
    """Say once (the gunicorn master does) whether `service` will report to Sentry."""
    level, message = _missing(dsn) or _invalid(dsn or "") or (logging.INFO, f"sentry enabled for {service}")
    log.log(level, message)
    os.environ[ANNOUNCED_ENV] = "1"


def _missing(dsn: str | None) -> tuple[int, str] | None:
    if not dsn:
        return logging.INFO, "sentry disabled: no SENTRY_DSN"
    if sentry_sdk is None:
        return logging.WARNING, "sentry disabled: sentry-sdk is not installed"
    return None


def _invalid(dsn: str) -> tuple[int, str] | None:
    try:
        sentry_sdk.utils.Dsn(dsn)
    except Exception as exc:
        return logging.WARNING, f"sentry disabled: invalid SENTRY_DSN ({type(exc).__name__})"
    return None


def _start(
    service: str,
    dsn: str,
    environment: str | None,
    release: str | None,
    traces_sample_rate: float,
    options: dict[str, Any],
    secrets: Secrets | None,
) -> tuple[int, str] | None:
    """Initialise the SDK; the reason it refused (a malformed DSN), or None."""
    try:
        # PII stays off: the SDK's default is send_default_pii=False (the option itself is
        # deprecated in recent SDKs, so it is not passed); scrub_event is the second guard.
        sentry_sdk.init(
            dsn=dsn,
            environment=environment or os.environ.get("SENTRY_ENVIRONMENT"),
            release=release or os.environ.get("SENTRY_RELEASE"),
            traces_sample_rate=traces_sample_rate,
            before_send=functools.partial(scrub_event, secrets=secrets),
            before_send_transaction=functools.partial(scrub_event, secrets=secrets),
            server_name=service,
            **options,
        )
    except Exception as exc:  # BadDsn and friends: report, keep serving
        return logging.WARNING, f"sentry disabled: invalid SENTRY_DSN ({type(exc).__name__})"
    return None


def init_app(app: Flask) -> None:
    """Initialise Sentry from the app's configuration."""
    enabled = init_sentry(
        app.config["SERVICE_NAME"],
        app.config.get("SENTRY_ENVIRONMENT"),
        app.config.get("SENTRY_RELEASE"),
        dsn=app.config.get("SENTRY_DSN") or "",
        traces_sample_rate=float(app.config.get("SENTRY_TRACES_SAMPLE_RATE") or 0.0),
        secrets=app_secrets(app),
        quiet=os.environ.get(ANNOUNCED_ENV) == "1",
    )
    app.extensions[EXTENSION] = enabled


def capture_exception(exc: BaseException, context: Mapping[str, Any] | None = None) -> str | None:
    """Report `exc` with optional context; a no-op returning None when Sentry is off."""
    if sentry_sdk is None or not sentry_sdk.is_initialized():
        return None
    with sentry_sdk.new_scope() as scope:
        for key, value in (context or {}).items():
            scope.set_extra(key, value)
        return sentry_sdk.capture_exception(exc)


def set_user(user_id: str | None = None, **fields: Any) -> None:
    """Attach a user (id only by default: no PII) to subsequent events."""
    if sentry_sdk is not None and sentry_sdk.is_initialized():
        sentry_sdk.set_user({"id": user_id, **fields} if user_id else None)


def _self_check() -> None:
    print("sentry self-check")
    print(f"  sentry-sdk installed: {sentry_sdk is not None}")
    assert init_sentry("self-check", dsn="") is False
    print("  no DSN -> disabled, no error: ok")
    assert init_sentry("self-check", dsn="not a dsn") is False
    print("  malformed DSN -> warning, disabled, no crash: ok")
    headers = {"X-API-Key": "s3cret", "Authorization": "Bearer t"}
    scrub_event({"request": {"headers": headers}})
    assert set(headers.values()) == {FILTERED}
    print("  X-API-Key and Authorization scrubbed: ok")
    assert capture_exception(RuntimeError("x")) is None
    print("  capture_exception without Sentry is a no-op: ok")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="  log: %(levelname)s %(message)s")
    _self_check()
