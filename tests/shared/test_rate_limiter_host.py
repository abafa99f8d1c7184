"""The host store: exact across the processes of one host, and the gunicorn master's choice of store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sardag_testing import FakeClock
from sardag_testing.processes import SUPPORT_PATH

from shared import gunicorn_hooks
from shared.rate_limiter import FailoverBackend, HostBackend, storage_from_url
from shared.rate_limiter.host import HOST_STORE_ENV, PURGE_EVERY


@pytest.mark.unit
def test_55_hits_on_a_50_limit_and_what_the_headers_say(tmp_path: Path) -> None:
    clock = FakeClock(7000.0)
    store = HostBackend(str(tmp_path / "limits.sqlite"), clock=clock, wall_clock=lambda: 1_000_000.0)
    results = []
    for _ in range(55):
        results.append(store.hit("scope:10.0.0.1", 50, 60.0))
        clock.now += 0.5
    assert [r.allowed for r in results] == [True] * 50 + [False] * 5
    assert [r.remaining for r in results[:50]] == list(range(49, -1, -1))
    first_rejection = results[50]  # at t=25 s the first hit (t=0) frees its slot at t=60
    assert first_rejection.retry_after == pytest.approx(35.0)
    assert first_rejection.retry_after_header == "35"
    assert first_rejection.reset_header == str(1_000_000 + 35)


@pytest.mark.unit
def test_window_slides_by_one_hit_and_rejections_do_not_count(tmp_path: Path) -> None:
    clock = FakeClock(7000.0)
    store = HostBackend(str(tmp_path / "limits.sqlite"), clock=clock)
    for _ in range(3):
        assert store.hit("k", 3, 60.0).allowed
        clock.now += 10
    for _ in range(20):  # t = 30..49.5: rejected, and not counted
        assert not store.hit("k", 3, 60.0).allowed
        clock.now += 1
    clock.now = 7060.0  # the first hit (t=7000) has left
    assert [store.hit("k", 3, 60.0).allowed for _ in range(2)] == [True, False]


@pytest.mark.unit
def test_two_stores_on_one_file_share_every_count(tmp_path: Path) -> None:
    path = str(tmp_path / "limits.sqlite")
    first, second = HostBackend(path), HostBackend(path)
    allowed = [(first if i % 2 else second).hit("k", 10, 60.0).allowed for i in range(14)]
    assert allowed == [True] * 10 + [False] * 4


@pytest.mark.unit
def test_keys_left_idle_are_swept_and_the_rest_bounded(tmp_path: Path) -> None:
    clock = FakeClock(7000.0)
    store = HostBackend(str(tmp_path / "limits.sqlite"), max_keys=100, clock=clock)
    for i in range(PURGE_EVERY):
        store.hit(f"k{i}", 5, 60.0)
        clock.now += 0.001
    assert len(store) == 100  # bounded: the least recently hit went first
    clock.now += 61
    for i in range(PURGE_EVERY):
        store.hit(f"other{i}", 5, 60.0)
        clock.now += 0.001
    assert len(store) == 100
    assert not store.hit(f"other{PURGE_EVERY - 1}", 1, 60.0).allowed  # the most recent were kept
    assert store.hit("k0", 1, 60.0).allowed  # the idle ones were swept


@pytest.mark.unit
def test_a_sweep_keeps_partly_expired_keys_exact(tmp_path: Path) -> None:
    clock = FakeClock(7000.0)
    store = HostBackend(str(tmp_path / "limits.sqlite"), clock=clock)
    for _ in range(3):  # t = 0, 10, 20 (relative)
        assert store.hit("busy", 3, 60.0).allowed
        clock.now += 10
    clock.now += 35  # t = 65: the first hit has left, the other two have not
    for i in range(PURGE_EVERY):  # enough writes to sweep while "busy" is partly expired
        store.hit(f"other{i}", 3, 60.0)
    assert [store.hit("busy", 3, 60.0).allowed for _ in range(2)] == [True, False]


@pytest.mark.unit
def test_a_huge_limit_is_exact_too(tmp_path: Path) -> None:
    clock = FakeClock(7000.0)
    store = HostBackend(str(tmp_path / "limits.sqlite"), clock=clock)
    results = []
    for _ in range(5001):
        results.append(store.hit("k", 5000, 60.0))
        clock.now += 0.001
    assert [r.allowed for r in results].count(True) == 5000
    assert results[4999].remaining == 0
    assert not results[5000].allowed
    assert results[5000].retry_after == pytest.approx(60.0 - 5.0, abs=0.01)


@pytest.mark.unit
def test_an_unusable_store_fails_open_in_process(tmp_path: Path) -> None:
    backend = storage_from_url(f"file://{tmp_path}/missing-dir/limits.sqlite")
    assert isinstance(backend, FailoverBackend)
    assert [backend.hit("k", 2, 60.0).allowed for _ in range(3)] == [True, True, False]
    assert backend.degraded


HAMMER = """
import sys
from shared.rate_limiter import HostBackend
from sardag_testing import FakeClock
store = HostBackend(sys.argv[1])
print(sum(store.hit("shared-key", 100, 60.0).allowed for _ in range(150)))
"""


@pytest.mark.integration
@pytest.mark.slow
def test_exact_across_processes_deciding_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "limits.sqlite")
    command = [sys.executable, "-c", HAMMER, path]
    env = {**os.environ, "PYTHONPATH": str(SUPPORT_PATH)}
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    admitted = [int(process.communicate(timeout=120)[0]) for process in processes]
    assert sum(admitted) == 100, admitted


class FakeLog:
    """Collects what the master would log."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.lines.append(message % args)

    error = info


def _server(workers: int) -> SimpleNamespace:
    return SimpleNamespace(cfg=SimpleNamespace(workers=workers), log=FakeLog())


def _config(**overrides: Any) -> dict[str, Any]:
    return {"SERVICE_NAME": "svc", "RATE_LIMIT_ENABLED": True, "REDIS_URL": None, **overrides}


@pytest.fixture
def master_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A master's environment: no host store yet, temporary files under tmp_path."""
    monkeypatch.setenv(HOST_STORE_ENV, "")  # recorded, so teardown removes what a test sets
    monkeypatch.delenv(HOST_STORE_ENV)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))  # configure() sets it
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setattr("tempfile.tempdir", None)
    return tmp_path


@pytest.mark.unit
def test_several_workers_without_redis_share_a_store_created_before_the_fork(master_env: Path) -> None:
    server = _server(3)
    gunicorn_hooks.share_rate_limits(server, _config())
    url = os.environ[HOST_STORE_ENV]
    path = Path(url.removeprefix("file://"))
    assert path.is_file()
    assert path.is_relative_to(master_env)
    assert server.log.lines == [f"rate limits: exact across 3 workers through a store on this host ({path})"]
    gunicorn_hooks.remove_host_store()
    assert not path.parent.exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("workers", "config", "line"),
    [
        (1, _config(), "rate limits: in-process, exact (1 worker, no REDIS_URL)"),
        (
            2,
            _config(REDIS_URL="redis://h/0"),
            ("rate limits: on Redis, exact across 2 workers and every instance"),
        ),
        (4, _config(RATE_LIMIT_ENABLED=False), "rate limits: off (RATE_LIMIT_ENABLED=0)"),
    ],
)
def test_every_start_says_how_limits_are_counted(
    master_env: Path, workers: int, config: dict[str, Any], line: str
) -> None:
    server = _server(workers)
    gunicorn_hooks.share_rate_limits(server, config)
    assert server.log.lines == [line]
    assert HOST_STORE_ENV not in os.environ


@pytest.mark.unit
def test_a_store_that_cannot_be_created_refuses_to_start_with_one_line(
    master_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (master_env / "not-a-directory").write_text("")
    monkeypatch.setattr("tempfile.tempdir", str(master_env / "not-a-directory"))
    with pytest.raises(SystemExit) as stop:
        gunicorn_hooks.share_rate_limits(_server(2), _config())
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("configuration error: WEB_CONCURRENCY: 2 workers without REDIS_URL need")


@pytest.mark.unit
def test_adding_workers_without_a_shared_store_is_logged(master_env: Path) -> None:
    server = _server(1)
    namespace: dict[str, Any] = {}
    gunicorn_hooks.configure(namespace, "svc")
    namespace["nworkers_changed"](server, 2, 1)
    assert server.log.lines == [
        "rate limits: now counted per worker (2 workers, no REDIS_URL, started with one): "
        "a client may get up to 2x its limit until restarted with WEB_CONCURRENCY=2"
    ]


@pytest.mark.unit
def test_gunicorn_setting_the_worker_count_at_start_is_not_a_change(master_env: Path) -> None:
    # arbiter setup sets num_workers from None before on_starting has created the host store
    server = _server(2)
    namespace: dict[str, Any] = {}
    gunicorn_hooks.configure(namespace, "svc")
    namespace["nworkers_changed"](server, 2, None)
    namespace["nworkers_changed"](server, 1, 2)  # TTOU: fewer workers never over-count
    assert server.log.lines == []
