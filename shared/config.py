"""One typed configuration loader: `.env`, then the environment, then a mapping."""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import ipaddress
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self, get_args, get_origin, get_type_hints
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values

from shared.secrets import MIN_KEY_LENGTH, key_file_keys, redacted

RATE_LIMIT_PREFIX = "RATE_LIMIT_"
_RESERVED_RATE_LIMIT_KEYS = {
    "RATE_LIMIT_DEFAULT",
    "RATE_LIMIT_ENABLED",
    "RATE_LIMIT_WINDOW_SECONDS",
    "RATE_LIMIT_MAX_KEYS",
    "RATE_LIMIT_IPV6_PREFIX",
}


class ConfigError(ValueError):
    """A configuration value is invalid; its message is one line naming the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"configuration error: {name}: {problem}")
        self.name = name
        self.problem = problem


Parser = Callable[[str], Any]
Check = Callable[[Mapping[str, Any]], None]  # raises ConfigError


@dataclass(frozen=True)
class Setting:
    """One configuration variable: its name, how to parse it, and its default."""

    name: str
    parse: Parser
    default: Any = None
    help: str = ""


def parse_str(value: str) -> str | None:
    """Return the stripped string, or None when empty."""
    value = value.strip()
    return value or None


def parse_bool(value: str) -> bool:
    """Parse 1/0, true/false, yes/no, on/off."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be a boolean (1/0, true/false), got {value!r}")


def parse_int(minimum: int | None = None, maximum: int | None = None) -> Parser:
    """Build a parser for an integer within [minimum, maximum]."""

    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError(f"must be an integer, got {value!r}") from None
        _check_range(number, minimum, maximum)
        return number

    return parse


def parse_float(minimum: float | None = None, maximum: float | None = None) -> Parser:
    """Build a parser for a finite float within [minimum, maximum]."""

    def parse(value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {value!r}")
        _check_range(number, minimum, maximum)
        return number

    return parse


def _check_range(number: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ValueError(f"must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"must be at most {maximum}, got {number}")


def parse_url(*schemes: str) -> Parser:
    """Build a parser for a URL whose scheme is one of `schemes`."""

    def parse(value: str) -> str | None:
        value = value.strip()
        if not value:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in schemes:
            allowed = ", ".join(f"{s}://" for s in schemes)
            raise ValueError(f"unknown URL scheme {scheme + '://' if scheme else value!r}; use {allowed}")
        return value

    return parse


def parse_redis_url(value: str) -> str | None:
    """A Redis URL: one server, or a master through Sentinel (`redis+sentinel://`)."""
    from shared.redis_conn import PLAIN_SCHEMES, SENTINEL_SCHEMES, check_redis_url

    url: str | None = parse_url(*PLAIN_SCHEMES, *SENTINEL_SCHEMES)(value)
    if url is not None:
        check_redis_url(url)
    return url


def parse_choice(*choices: str) -> Parser:
    """Build a parser for one of a fixed set of (case-insensitive) words."""

    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return lowered

    return parse


def parse_key(value: str) -> str | None:
    """One API key (surrounding spaces dropped), at least MIN_KEY_LENGTH characters; None when empty."""
    key = value.strip()
    if key and len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"a key must be at least {MIN_KEY_LENGTH} characters, got {len(key)}{_KEY_HINT}")
    return key or None


def parse_key_list(value: str) -> tuple[str, ...]:
    """Comma-separated API keys (surrounding spaces dropped, no empty entries), each long enough."""
    keys = tuple(dict.fromkeys(k.strip() for k in value.split(",") if k.strip()))
    for number, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_LENGTH:
            raise ValueError(f"key {number} is shorter than {MIN_KEY_LENGTH} characters{_KEY_HINT}")
    return keys


_KEY_HINT = ' (make one: python -c "import secrets; print(secrets.token_urlsafe(32))")'


def parse_log_level(value: str) -> str:
    """Parse a logging level name."""
    level = value.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {value!r}")
    return level


OTEL_SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
_HTTP_URL = parse_url("http", "https")
_RATIO = parse_float(0.0, 1.0)


def parse_otlp_endpoint(value: str) -> str | None:
    """An OTLP/HTTP collector URL; tracing on needs the `tracing` extra installed."""
    url: str | None = _HTTP_URL(value)
    if url is not None and importlib.util.find_spec("opentelemetry.sdk") is None:
        raise ValueError("tracing needs OpenTelemetry: pip install 'sardag-services[tracing]', or unset it")
    if url is not None and not urlsplit(url).hostname:
        raise ValueError(f"needs a host, got {value!r}")
    return url


def parse_ratio(value: str) -> float | None:
    """A sampling ratio in [0, 1]; empty means unset (the sampler's default, 1.0)."""
    ratio: float | None = _RATIO(value) if value.strip() else None
    return ratio


def parse_resource_attributes(value: str) -> dict[str, str]:
    """W3C-baggage-like `key=value,key=value` (values percent-decoded), as OpenTelemetry reads it."""
    found: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, equals, raw = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"each entry must be key=value, got {item[:64]!r}")
        found[key.strip()] = unquote(raw.strip())
    return found


def parse_otlp_headers(value: str) -> dict[str, str]:
    """OTLP exporter headers, `key=value,key=value`; an error never quotes them (they hold tokens)."""
    try:
        return parse_resource_attributes(value)
    except ValueError:
        raise ValueError("must be key=value pairs, comma-separated (not shown: it may hold a token)") from None


# What every service reads; a setting one service alone uses lives in its settings module.
SHARED_SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", parse_redis_url, None),
    Setting("REDIS_TIMEOUT_SECONDS", parse_float(0.001, 10.0), 0.05),
    Setting("API_KEY", parse_key, None),
    Setting("API_KEYS", parse_key_list, (), "more accepted keys, comma-separated (rotation)"),
    Setting("API_KEYS_FILE", parse_str, None, "file of accepted keys, one a line, re-read on change"),
    Setting("BIND", parse_str, "127.0.0.1"),
    Setting("PORT", parse_int(1, 65535), 5000),
    Setting("ALLOW_UNAUTHENTICATED", parse_bool, False),
    Setting("TRUSTED_PROXIES", parse_int(0, 10), 0),
    Setting("RATE_LIMIT_DEFAULT", parse_int(1), 60),
    Setting("RATE_LIMIT_ENABLED", parse_bool, True),
    Setting("RATE_LIMIT_WINDOW_SECONDS", parse_float(0.001), 60.0),
    Setting("RATE_LIMIT_MAX_KEYS", parse_int(1), 100_000),
    Setting(
        "RATE_LIMIT_IPV6_PREFIX", parse_int(32, 128), 64, "IPv6 clients are limited per network of this size"
    ),
    Setting("SENTRY_DSN", parse_str, None),
    Setting("SENTRY_ENVIRONMENT", parse_str, None),
    Setting("SENTRY_RELEASE", parse_str, None),
    Setting("SENTRY_TRACES_SAMPLE_RATE", parse_float(0.0, 1.0), 0.0),
    Setting("LOG_LEVEL", parse_log_level, "INFO"),
    Setting("LOG_FORMAT", parse_choice("json", "text"), "json"),
    # Tracing (shared/tracing.py): the standard OpenTelemetry variables; no endpoint = off.
    Setting("OTEL_EXPORTER_OTLP_ENDPOINT", parse_otlp_endpoint, None, "OTLP/HTTP collector; unset: no tracing"),
    Setting("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", parse_otlp_endpoint, None, "full traces URL (overrides)"),
    Setting("OTEL_EXPORTER_OTLP_HEADERS", parse_otlp_headers, {}, "secret: sent with every export"),
    Setting("OTEL_EXPORTER_OTLP_TRACES_HEADERS", parse_otlp_headers, {}, "secret: for traces (overrides)"),
    Setting("OTEL_EXPORTER_OTLP_PROTOCOL", parse_choice("http/protobuf"), "http/protobuf"),
    Setting("OTEL_SERVICE_NAME", parse_str, None, "default: the service's name"),
    Setting("OTEL_TRACES_SAMPLER", parse_choice(*OTEL_SAMPLERS), "parentbased_always_on"),
    Setting("OTEL_TRACES_SAMPLER_ARG", parse_ratio, None, "the ratio of *traceidratio"),
    Setting("OTEL_RESOURCE_ATTRIBUTES", parse_resource_attributes, {}),
    Setting("OTEL_SDK_DISABLED", parse_bool, False),
)


# repr=False: the fields hold keys and URLs with passwords; the object never prints them.
@dataclass(frozen=True, repr=False)
class SharedConfig:
    """The typed settings: each field is the resolved setting of its name upper-cased.

    A service subclasses it with its own settings and builds it once, in `create_app`,
    from `app.config` (after the test overrides); request code reads its fields.
    """

    service_name: str
    redis_url: str | None
    redis_timeout_seconds: float
    api_key: str | None
    api_keys: tuple[str, ...]
    api_keys_file: str | None
    bind: str
    port: int
    allow_unauthenticated: bool
    trusted_proxies: int
    rate_limit_default: int
    rate_limit_enabled: bool
    rate_limit_window_seconds: float
    rate_limit_max_keys: int
    rate_limit_ipv6_prefix: int
    rate_limits: dict[str, int]
    sentry_dsn: str | None
    sentry_environment: str | None
    sentry_release: str | None
    sentry_traces_sample_rate: float
    log_level: str
    log_format: str
    otel_exporter_otlp_endpoint: str | None
    otel_exporter_otlp_traces_endpoint: str | None
    otel_exporter_otlp_protocol: str
    otel_service_name: str | None
    otel_traces_sampler: str
    otel_traces_sampler_arg: float | None
    otel_resource_attributes: dict[str, str]
    otel_exporter_otlp_headers: dict[str, str]
    otel_exporter_otlp_traces_headers: dict[str, str]
    otel_sdk_disabled: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """The typed view of a resolved configuration (`load_config`'s, overrides applied)."""
        hints = get_type_hints(cls)
        return cls(**{f.name: _typed(hints[f.name], config[f.name.upper()]) for f in fields(cls)})


def _typed(hint: Any, value: Any) -> Any:
    """`value` as the field's type: a test override may give 1 for 1.0, or a list for a tuple."""
    if hint in (int, float, bool):
        return hint(value)
    if get_origin(hint) is tuple:
        return tuple(value)
    if get_origin(hint) is dict:
        return dict(value)
    if value is not None and type(None) in get_args(hint) and float in get_args(hint):
        return float(value)
    return value


@dataclass(frozen=True)
class ServiceSettings:
    """What one service declares: its name, its own settings, its defaults for shared ones."""

    name: str
    settings: tuple[Setting, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    check: Check | None = None


# Service name -> the module declaring SERVICE, SETTINGS, DEFAULTS and optionally `check`
# (the checks across settings) - light to import.
SERVICES = {
    "database-service": "database_service.settings",
    "websocket-streaming": "websocket_streaming.settings",
}


def service_settings(name: str) -> ServiceSettings:
    """The declared settings of the service `name` (KeyError for an unknown name)."""
    module = importlib.import_module(SERVICES[name])
    return ServiceSettings(
        module.SERVICE, tuple(module.SETTINGS), dict(module.DEFAULTS), getattr(module, "check", None)
    )


# Variables a user sets meaning one of ours; SARDAG_* names the deployment files use themselves.
LOOKALIKES = {"HOST": "BIND", "LISTEN": "BIND", "BIND_ADDRESS": "BIND", "HTTP_PORT": "PORT"}
OWN_PREFIX = "SARDAG_"


def _installed(attribute: str) -> set[Any]:
    """The union of `attribute` over the settings modules of the services installed here."""
    found: set[Any] = set()
    for module in SERVICES.values():
        try:
            found.update(getattr(importlib.import_module(module), attribute, ()))
        except ImportError:
            continue
    return found


def lookalike_warnings(
    environ: Mapping[str, str] | None = None,
    *,
    settings: Iterable[Setting] = (),
    scopes: Iterable[str] | None = None,
    env_file: str | Path | None = ".env",
) -> list[str]:
    """One line per variable that looks like a setting but is none, naming the likely one.

    `HOST=0.0.0.0` is silently ignored (the address is BIND), `SARDAG_DATABASE_URL` is not
    read, `RATE_LIMIT_SIGNAL_SAVE` limits nothing: each would leave a user believing it
    took effect.
    """
    # one .env may serve both services: a setting or scope of either is no typo
    installed = {s.name for s in _installed("SETTINGS")}
    names = sorted(installed | {s.name for s in (*SHARED_SETTINGS, *settings)})
    known_scopes = sorted(_installed("RATE_LIMIT_SCOPES") if scopes is None else set(scopes))
    raw = _read_sources(environ, env_file)
    lines = []
    for variable in sorted(raw):
        meant = _meant(variable, names, known_scopes)
        if meant:
            lines.append(f"configuration warning: {variable} is ignored (not a setting); did you mean {meant}?")
    return lines


def _meant(variable: str, names: list[str], scopes: list[str]) -> str | None:
    if variable in names:
        return None
    if variable in LOOKALIKES:
        return LOOKALIKES[variable]
    if variable.startswith(OWN_PREFIX):
        bare = variable.removeprefix(OWN_PREFIX)
        if bare in names:
            return bare
        close = difflib.get_close_matches(bare, names, n=1, cutoff=0.85)
        return close[0] if close else None
    if variable.startswith(RATE_LIMIT_PREFIX) and variable not in _RESERVED_RATE_LIMIT_KEYS:
        scope = variable.removeprefix(RATE_LIMIT_PREFIX).lower()
        if scope in scopes:
            return None
        candidates = [RATE_LIMIT_PREFIX + s.upper() for s in scopes] + sorted(_RESERVED_RATE_LIMIT_KEYS)
        close = difflib.get_close_matches(variable, candidates, n=1, cutoff=0.6)
        return close[0] if close else "one of " + ", ".join(candidates)
    return None


def warn_lookalikes(settings: Iterable[Setting] = ()) -> None:
    """Print `lookalike_warnings` to stderr (at start and in `python -m shared.config`)."""
    for line in lookalike_warnings(settings=settings):
        print(line, file=sys.stderr)


def load_config(
    service: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    settings: Iterable[Setting] = (),
    defaults: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: str | Path | None = ".env",
    check: Check | None = None,
) -> dict[str, Any]:
    """Resolve every setting: defaults < `.env` < environment < `overrides`; then `check` it all."""
    specs = _merge_settings(settings, defaults or {})
    raw = _read_sources(environ, env_file)
    config: dict[str, Any] = {"SERVICE_NAME": service}
    for spec in specs.values():
        config[spec.name] = _resolve(spec, raw, overrides or {})
    config["RATE_LIMITS"] = _route_limits(raw, overrides or {})
    for key, value in (overrides or {}).items():
        if key not in specs and key != "RATE_LIMITS":
            config[key] = value
    _check_bind(config)
    _check_key_file(config.get("API_KEYS_FILE"))
    _check_sentinels(config)
    if check is not None:
        check(config)
    return config


def _merge_settings(extra: Iterable[Setting], defaults: Mapping[str, Any]) -> dict[str, Setting]:
    specs = {s.name: s for s in (*SHARED_SETTINGS, *extra)}
    for name, value in defaults.items():
        spec = specs[name]
        specs[name] = Setting(spec.name, spec.parse, value, spec.help)
    return specs


def _read_sources(environ: Mapping[str, str] | None, env_file: str | Path | None) -> dict[str, str]:
    raw: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        raw.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    raw.update(os.environ if environ is None else environ)
    return raw


def _resolve(spec: Setting, raw: Mapping[str, str], overrides: Mapping[str, Any]) -> Any:
    if spec.name in overrides:
        value = overrides[spec.name]
        return _parse(spec, value) if isinstance(value, str) else value
    if spec.name in raw:
        return _parse(spec, raw[spec.name])
    return spec.default


def _parse(spec: Setting, value: str) -> Any:
    try:
        return spec.parse(value)
    except ValueError as exc:
        raise ConfigError(spec.name, str(exc)) from None


def _route_limits(raw: Mapping[str, str], overrides: Mapping[str, Any]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for name, value in raw.items():
        if name.startswith(RATE_LIMIT_PREFIX) and name not in _RESERVED_RATE_LIMIT_KEYS:
            spec = Setting(name, parse_int(1))
            limits[name.removeprefix(RATE_LIMIT_PREFIX).lower()] = _parse(spec, value)
    limits.update(overrides.get("RATE_LIMITS", {}))
    return limits


def _check_bind(config: Mapping[str, Any]) -> None:
    bind = str(config["BIND"])
    keyed = config["API_KEY"] or config["API_KEYS"] or config["API_KEYS_FILE"]
    if _is_loopback(bind) or keyed or config["ALLOW_UNAUTHENTICATED"]:
        return
    raise ConfigError(
        "BIND",
        f"refusing to listen on non-loopback address {bind!r} without API_KEY "
        "(set API_KEY, or ALLOW_UNAUTHENTICATED=1)",
    )


def _check_key_file(path: str | None) -> None:
    """A configured API_KEYS_FILE must be readable and hold at least one key, each long enough."""
    if path is None:
        return
    try:
        keys = key_file_keys(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError("API_KEYS_FILE", f"cannot read {path!r}: {problem}") from None
    if not keys:
        raise ConfigError("API_KEYS_FILE", f"{path!r} holds no key (one a line; # comments ignored)")
    if any(len(key) < MIN_KEY_LENGTH for key in keys):
        raise ConfigError("API_KEYS_FILE", f"{path!r} holds a key shorter than {MIN_KEY_LENGTH} characters")


def _check_sentinels(config: Mapping[str, Any]) -> None:
    """With a Sentinel REDIS_URL, the sentinels that answer must know the master by that name."""
    from shared.redis_conn import check_sentinels, is_sentinel_url

    url = config.get("REDIS_URL")
    if url and is_sentinel_url(url):
        try:
            check_sentinels(url, timeout=max(0.5, float(config["REDIS_TIMEOUT_SECONDS"])))
        except ValueError as exc:
            raise ConfigError("REDIS_URL", str(exc)) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exit_on_config_error(error: ConfigError) -> None:
    """Print the one-line configuration error and stop the process (no traceback)."""
    print(str(error), file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """`python -m shared.config <service>`: validate what the service validates, print it redacted."""
    parser = argparse.ArgumentParser(
        prog="python -m shared.config",
        description="Validate a service's configuration (.env, then the environment) as it "
        "validates it at start-up, and print it with secrets masked.",
    )
    parser.add_argument("service", choices=sorted(SERVICES), help="the service whose settings to check")
    name = parser.parse_args(argv).service
    try:
        spec = service_settings(name)
    except ImportError as exc:
        print(f"configuration error: {name} is not installed here ({exc})", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        config = load_config(spec.name, settings=spec.settings, defaults=spec.defaults, check=spec.check)
    except ConfigError as exc:
        exit_on_config_error(exc)
    warn_lookalikes(spec.settings)
    for key, value in sorted(redacted(config).items()):
        print(f"{key}={value}")
    print(f"{name}: configuration valid; it would listen on {config['BIND']}:{config['PORT']}")


if __name__ == "__main__":
    # Run the imported module's main: a service's checks raise shared.config.ConfigError,
    # which is not this __main__ module's class of the same name.
    from shared.config import main as imported_main

    imported_main()
