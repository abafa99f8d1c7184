"""The self-check commands and the gunicorn hooks, run in-process."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

from shared import gunicorn_hooks
from shared.lifecycle import on_shutdown, shutdown
from shared.sentry_integration import ANNOUNCED_ENV
from shared.sentry_integration import _self_check as sentry_self_check

pytestmark = pytest.mark.unit


def test_sentry_self_check(capsys: pytest.CaptureFixture[str]) -> None:
    sentry_self_check()
    assert "malformed DSN -> warning, disabled, no crash: ok" in capsys.readouterr().out


def test_configure_sets_bind_workers_and_hooks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("PORT", "6100")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv(ANNOUNCED_ENV, "")  # on_starting sets it; restored after the test
    namespace: dict[str, Any] = {}
    gunicorn_hooks.configure(namespace, "svc", defaults={"PORT": 5020})
    assert namespace["bind"] == ["127.0.0.1:6100"]
    assert namespace["workers"] == 3
    assert namespace["worker_class"] == "gthread"
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_123.db").write_bytes(b"stale")
    master = SimpleNamespace(cfg=SimpleNamespace(workers=1), log=SimpleNamespace(info=lambda *args: None))
    namespace["on_starting"](master)
    assert list((tmp_path / "metrics").iterdir()) == []  # wiped at start


def test_ipv6_bind_is_bracketed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("BIND", "::1")
    namespace: dict[str, Any] = {}
    gunicorn_hooks.configure(namespace, "svc", defaults={"PORT": 5020})
    assert namespace["bind"] == ["[::1]:5020"]


def test_worker_exit_runs_shutdown_callbacks(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app: Flask = make_app(REDIS_URL=None)
    calls: list[str] = []
    on_shutdown(app, lambda: calls.append("pool closed"))
    on_shutdown(app, lambda: (_ for _ in ()).throw(RuntimeError("broken callback")))
    on_shutdown(app, lambda: calls.append("upstream closed"))
    gunicorn_hooks._worker_exit(None, SimpleNamespace(wsgi=app))
    assert calls == ["upstream closed", "pool closed"]  # newest first; a failure does not stop the rest
    shutdown(Flask("bare"))  # an app without callbacks is fine


def test_child_exit_marks_the_worker_dead(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "gauge_livemax_4242.db").write_bytes(b"")
    gunicorn_hooks._child_exit(None, SimpleNamespace(pid=4242))
    assert not (tmp_path / "gauge_livemax_4242.db").exists()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)


def test_without_a_metrics_directory_set_each_master_gets_a_private_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv(gunicorn_hooks.PRIVATE_METRICS_ENV, "")  # setenv, not delenv: restored after the test
    monkeypatch.setattr(gunicorn_hooks.tempfile, "tempdir", None)  # re-read TMPDIR
    made = []
    for _ in range(2):  # two masters of one service on one host
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # unset (empty); restored after the test
        namespace: dict[str, Any] = {}
        gunicorn_hooks.configure(namespace, "svc", defaults={"PORT": 5020})
        made.append(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    assert made[0] != made[1]
    assert made[0] != tmp_path / "sardag-metrics-svc"  # not the predictable shared path
    for path in made:
        assert path.is_dir()
        assert path.stat().st_mode & 0o777 == 0o700
    namespace["on_exit"](None)
    assert not made[1].exists()  # removed at the master's exit
