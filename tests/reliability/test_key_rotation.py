"""API keys: several at once, compared in constant time, rotated with no refused write.

The rotation runs the way docs/security.md describes it: database-service under gunicorn
(two workers) reads its keys from API_KEYS_FILE; the operator adds the new key, moves the
clients to it, then removes the old one, while a client keeps writing.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from pathlib import Path

import pytest
from sardag_testing.processes import Launcher, http

from shared import auth
from shared.config import ConfigError, load_config

OLD_KEY = "rotation-old-1f2e3d4c5b6a7980"
NEW_KEY = "rotation-new-0a9b8c7d6e5f4a3b"


def _write_keys(path: Path, *keys: str) -> None:
    """Replace the key file atomically, as an operator (or a secrets mount) does."""
    staging = path.with_suffix(".tmp")
    staging.write_text("# accepted API keys\n" + "".join(f"{k}\n" for k in keys))
    os.replace(staging, path)


class Writer(threading.Thread):
    """Saves a signal every few milliseconds with whatever key it is told to use."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.results: list[tuple[str, int]] = []  # (key used, status)
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            key, n = self.key, n + 1
            body = {"symbol": "BTCUSDT", "action": "BUY", "price": 1.0 + n, "client_id": f"rot-{n}"}
            status, _ = http("POST", f"{self.url}/signals/save", body, timeout=20, headers={"X-API-Key": key})
            self.results.append((key, status))
            time.sleep(0.005)

    def wait_for(self, count: int) -> None:
        """Wait until `count` more writes were answered."""
        target = len(self.results) + count
        deadline = time.monotonic() + 60
        while len(self.results) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.results) >= target, "the writer stalled"


def _status_with(url: str, key: str) -> int:
    body = {"symbol": "ETHUSDT", "action": "SELL", "price": 2.0}
    return http("POST", f"{url}/signals/save", body, timeout=20, headers={"X-API-Key": key})[0]


@pytest.mark.integration
@pytest.mark.api
@pytest.mark.slow
def test_rotating_a_key_refuses_no_write_and_retires_the_old_key(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    _write_keys(keys, OLD_KEY)
    with Launcher(tmp_path) as launch:
        # the limit is not under test here: a steady writer would reach 100/min (exact across workers)
        service = launch.gunicorn(
            "database-service", workers=2, API_KEYS_FILE=str(keys), RATE_LIMIT_SIGNALS_SAVE="100000"
        )
        writer = Writer(service.url, OLD_KEY)
        writer.start()
        writer.wait_for(30)
        _write_keys(keys, OLD_KEY, NEW_KEY)  # 1. add the new key: both are valid now
        assert {_status_with(service.url, k) for k in (OLD_KEY, NEW_KEY) for _ in range(4)} == {201}
        writer.key = NEW_KEY  # 2. move the client over
        writer.wait_for(30)
        _write_keys(keys, NEW_KEY)  # 3. retire the old key
        writer.wait_for(30)
        writer.stop.set()
        writer.join(30)
        # Eight tries reach both workers: the old key is refused everywhere at once.
        assert {_status_with(service.url, OLD_KEY) for _ in range(8)} == {401}
        stored = http("GET", f"{service.url}/stats")[1]["signals"]

    refused = [(key[:13], status) for key, status in writer.results if status != 201]
    assert not refused, f"writes refused during the rotation: {refused[:5]}"
    assert {key for key, _ in writer.results} == {OLD_KEY, NEW_KEY}
    assert stored == len(writer.results) + 8  # every acknowledged write is stored (+ 8 overlap probes)


@pytest.mark.unit
def test_any_configured_key_is_accepted_and_no_other() -> None:
    environ = {"API_KEY": "first-key-0000-aaaa", "API_KEYS": "second-key-1111-bbbb, third-key-2222-cccc"}
    keys = auth.ApiKeys.from_config(load_config("svc", environ=environ, env_file=None))
    assert keys.required
    assert all(keys.accepts(k) for k in ("first-key-0000-aaaa", "second-key-1111-bbbb", "third-key-2222-cccc"))
    assert not keys.accepts("second-key-1111-bbb")
    assert not keys.accepts("")


@pytest.mark.unit
def test_every_key_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the time taken does not tell which key (or whether one) matched."""
    keys = auth.ApiKeys([f"key-number-{i:04d}" for i in range(5)], None)
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a) + len(b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    for given in ("key-number-0000", "key-number-0004", "nope", "x" * 500):
        calls.clear()
        keys.accepts(given)
        assert calls == [64] * 5  # five comparisons of two 32-byte digests, every time


@pytest.mark.unit
def test_an_unreadable_key_file_accepts_nothing(tmp_path: Path) -> None:
    keys = auth.ApiKeys([], str(tmp_path / "missing"))
    assert keys.required  # writes stay protected: fail closed
    assert not keys.accepts("")
    assert not keys.accepts("anything-at-all")


@pytest.mark.unit
def test_api_keys_alone_allow_a_public_bind(tmp_path: Path) -> None:
    assert load_config("svc", environ={"BIND": "0.0.0.0", "API_KEYS": "k1-abcdef-0123456789"}, env_file=None)
    keys = tmp_path / "keys"
    keys.write_text(f"{OLD_KEY}\n")
    assert load_config("svc", environ={"BIND": "0.0.0.0", "API_KEYS_FILE": str(keys)}, env_file=None)
    with pytest.raises(ConfigError):
        load_config("svc", environ={"BIND": "0.0.0.0", "API_KEYS": " , "}, env_file=None)
