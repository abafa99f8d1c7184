"""REDIS_URL forms: one server (`redis://`, `rediss://`, `unix://`) or Redis Sentinel.

The Sentinel form is the one `limits` / Flask-Limiter read:
`redis+sentinel://[[user]:password@]host1:26379,host2:26379/<master>[/db]`, and
`rediss+sentinel://` for TLS. Its password, user, TLS and query options apply to the
sentinels and to the master alike. Light to import (no redis-py): the configuration
loader validates with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
SENTINEL_FORM = "redis+sentinel://[:password@]host1:26379,host2:26379/<master>[/db]"


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a Sentinel REDIS_URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    query: str = ""  # redis-py connection options (`ssl_ca_certs=...`), for sentinels and master


def is_sentinel(url: str) -> bool:
    """Whether `url` names Redis through its sentinels."""
    return urlsplit(url).scheme in SENTINEL_SCHEMES


def parse_redis_url(value: str) -> str | None:
    """Validate a REDIS_URL (ValueError with a one-line reason that never repeats the URL)."""
    value = value.strip()
    if not value:
        return None
    scheme = _split(value).scheme
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(value)
    elif scheme in PLAIN_SCHEMES:
        _check_one_host(value)
    else:
        allowed = ", ".join(f"{s}://" for s in (*PLAIN_SCHEMES, *SENTINEL_SCHEMES))
        raise ValueError(f"unknown URL scheme {scheme + '://' if scheme else '(none)'}; use {allowed}")
    return value


def _check_one_host(url: str) -> None:
    netloc = urlsplit(url).netloc
    if "," in netloc.rpartition("@")[2]:
        raise ValueError(f"several hosts are sentinels: write them as {SENTINEL_FORM}")


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, master name, db and credentials of a `redis+sentinel://` URL."""
    parts = _split(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL; use {SENTINEL_FORM}")
    if "://" in url[len(parts.scheme) + 3 :]:
        raise ValueError(f"a sentinel host is a URL (plain and sentinel hosts mixed); use {SENTINEL_FORM}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    master, db = _master_and_db(parts.path)
    return SentinelURL(
        sentinels=tuple(_sentinel(h) for h in hosts.split(",")),
        master=master,
        db=db,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=parts.scheme == "rediss+sentinel",
        query=parts.query,
    )


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:  # its message may quote the URL, password and all
        raise ValueError(f"malformed URL (a sentinel host's [IPv6] bracket?); use {SENTINEL_FORM}") from None


def _sentinel(text: str) -> tuple[str, int]:
    text = text.strip()
    if "://" in text or not text:
        raise ValueError(f"a sentinel host is empty or is a URL; use {SENTINEL_FORM}")
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"a sentinel host is empty; use {SENTINEL_FORM}")
    if not port_text:
        return host, SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel {host}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def _master_and_db(path: str) -> tuple[str, int]:
    segments = [unquote(s) for s in path.split("/")[1:]]
    if not segments or not segments[0]:
        raise ValueError(f"no master name (the service the sentinels monitor); use {SENTINEL_FORM}")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError(f"after the master name only a database number may follow; use {SENTINEL_FORM}")
    return segments[0], int(segments[1]) if len(segments) == 2 else 0
