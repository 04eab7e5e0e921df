"""``autoft serve --workers``: the default from the cores, one process with the runner, the uvicorn call
with the worker app factory, and one report-link secret shared by every worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from autoft_service.api import report_links
from autoft_service.cli import app, serve
from autoft_service.settings import Settings

runner = CliRunner()


@pytest.fixture
def restored_environ() -> Iterator[None]:
    """``serve`` exports the workers' settings into ``os.environ``: put it back afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    return calls


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restored_environ: None) -> Path:
    for name in [n for n in os.environ if n.startswith("AUTOFT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AUTOFT_ENVIRONMENT", "test")
    monkeypatch.setenv("AUTOFT_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # no MLflow store to create
    return tmp_path


def test_default_workers_follow_the_cores_without_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(3)), raising=False)
    assert serve.default_workers(runner=False) == 3
    assert serve.default_workers(runner=True) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)), raising=False)
    assert serve.default_workers(runner=False) == serve.MAX_DEFAULT_WORKERS


def test_workers_with_the_runner_are_refused(env: Path, uvicorn_calls: list[Any]) -> None:
    res = runner.invoke(app, ["serve", "--workers", "2", "--data-dir", str(env)])
    assert res.exit_code == 2
    assert "--workers" in res.output and "--no-runner" in res.output
    assert uvicorn_calls == []


def test_workers_zero_is_refused(env: Path, uvicorn_calls: list[Any]) -> None:
    res = runner.invoke(app, ["serve", "--no-runner", "--workers", "0", "--data-dir", str(env)])
    assert res.exit_code == 2 and "--workers" in res.output
    assert uvicorn_calls == []


def test_several_workers_run_the_app_factory(env: Path, uvicorn_calls: list[Any]) -> None:
    res = runner.invoke(
        app, ["serve", "--no-runner", "--workers", "3", "--port", "8123", "--data-dir", str(env)]
    )
    assert res.exit_code == 0, res.output
    [(target, kw)] = uvicorn_calls
    assert target == serve.WORKER_APP == "autoft_service.cli.serve:worker_app"
    assert kw["factory"] is True and kw["workers"] == 3 and kw["port"] == 8123
    assert os.environ["AUTOFT_DATA_DIR"] == str(env.resolve())  # --data-dir reaches every worker
    assert len(os.environ["AUTOFT_REPORT_LINK_SECRET"]) >= 32


def test_one_worker_serves_the_app_in_this_process(env: Path, uvicorn_calls: list[Any]) -> None:
    res = runner.invoke(app, ["serve", "--no-runner", "--workers", "1", "--data-dir", str(env)])
    assert res.exit_code == 0, res.output
    [(target, kw)] = uvicorn_calls
    assert not isinstance(target, str) and "workers" not in kw


def test_worker_env_shares_one_link_secret_unless_one_is_set(env: Path) -> None:
    shared = serve.worker_env(Settings(data_dir=env))
    assert (
        shared["AUTOFT_REPORT_LINK_SECRET"]
        != serve.worker_env(Settings(data_dir=env))["AUTOFT_REPORT_LINK_SECRET"]
    )  # drawn per server start
    configured = Settings(data_dir=env, report_link_secret="s" * 16)
    assert "AUTOFT_REPORT_LINK_SECRET" not in serve.worker_env(configured)


def test_a_link_signed_by_one_worker_opens_on_another(env: Path) -> None:
    os.environ.update(serve.worker_env(Settings(data_dir=env)))
    first, second = serve.worker_app(), serve.worker_app()  # what two worker processes build
    assert first.state.report_link_key == second.state.report_link_key
    token = report_links.sign(first.state.report_link_key, "job1", "acme", 2_000_000_000)
    report_links.verify(second.state.report_link_key, token, "job1", "acme", now=1_900_000_000)
    first.state.store.close()
    second.state.store.close()
