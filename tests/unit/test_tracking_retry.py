"""Trial tracking through a flaky MLflow server: a retried write never duplicates what already landed.

A tracking server going down can apply a request and lose only its answer; the driver then retries the
write. The child run of a trial must still be created exactly once, and a retried metrics write repeats
the same points rather than adding new ones."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from autoft_service.engine import SearchCallback, TrialEvent
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from autoft_service.tracking import Tracker
from tests.conftest import small_spec


class _Listener:
    def trial_started(self, ev: TrialEvent) -> None: ...

    def trial_reported(self, ev: TrialEvent, metrics: dict[str, float]) -> None: ...

    def trial_finished(self, ev: TrialEvent) -> None: ...


class _AnswerLost:
    """Wraps an MLflow client method: the first ``n`` calls are applied, then raise as if the reply was lost."""

    def __init__(self, fn: Any, n: int = 1) -> None:
        self.fn, self.left = fn, n

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.fn(*args, **kwargs)
        if self.left > 0:
            self.left -= 1
            raise MlflowException("connection reset by peer (reply lost)")
        return out


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Tracker, SearchCallback, str]:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=str(tmp_path / "artifacts"))
    tracker.ensure_store()
    exp = tracker.experiment("job-x")
    spec = parse_spec(small_spec())
    parent = tracker.start_parent(exp, "job-x", "job-x", {"name": "x"})
    cb = SearchCallback(
        tracker=tracker,
        searcher=SimpleNamespace(optuna_number=lambda tid: 0),  # type: ignore[arg-type]
        listener=_Listener(),  # type: ignore[arg-type]
        job_id="job-x",
        experiment_id=exp,
        parent_run_id=parent,
        metric="ood_val/accuracy",
        full_steps=10,
        search=spec.search,
    )
    return tracker, cb, exp


def _eventually(check: Any, timeout_s: float = 10.0) -> bool:
    """True once ``check()`` holds (the writes are applied by the callback's writer thread)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _trial(config: dict[str, Any]) -> Any:
    return SimpleNamespace(trial_id="t0", config=config, get_error=lambda: None)


def test_child_run_created_once_when_the_create_reply_is_lost(
    setup: tuple[Tracker, SearchCallback, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, cb, exp = setup
    monkeypatch.setattr(tracker.client, "create_run", _AnswerLost(tracker.client.create_run))
    trial = _trial({"optim": {"lr": 0.01}})
    cb.on_trial_start(0, [], trial)
    assert _eventually(lambda: cb.deferred == 1) and cb.pending  # the write failed and waits
    cb.on_trial_result(0, [], trial, {"ood_val/accuracy": 0.5, "step": 5})
    cb.on_trial_complete(0, [], trial)
    assert cb.flush(5.0)

    children = tracker.client.search_runs([exp], filter_string="tags.`autoft.role` = 'trial'")
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optim/lr"] == "0.01"
    assert run.data.metrics["ood_val/accuracy"] == 0.5
    assert cb.events["t0"].mlflow_run_id == run.info.run_id


def test_params_failure_after_create_reuses_the_run_and_metrics_are_not_doubled(
    setup: tuple[Tracker, SearchCallback, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, cb, exp = setup
    trial = _trial({"optim": {"lr": 0.02}})
    log_batch = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", _AnswerLost(log_batch))  # the params write after the create
    cb.on_trial_start(0, [], trial)
    assert cb.flush(5.0)
    monkeypatch.setattr(tracker.client, "log_batch", _AnswerLost(log_batch))  # metrics land, the reply is lost
    cb.on_trial_result(0, [], trial, {"ood_val/accuracy": 0.75, "step": 3})
    assert _eventually(lambda: cb.deferred == 2) and cb.pending
    cb.on_trial_complete(0, [], trial)
    assert cb.flush(5.0)

    children = tracker.client.search_runs([exp], filter_string="tags.`autoft.role` = 'trial'")
    assert len(children) == 1
    history = tracker.client.get_metric_history(children[0].info.run_id, "ood_val/accuracy")
    assert [(m.step, m.value) for m in history] == [(3, 0.75)]  # the retry repeated the same point
    assert children[0].data.params["optim/lr"] == "0.02"


def test_a_run_the_http_client_created_twice_is_deleted_at_the_end(
    setup: tuple[Tracker, SearchCallback, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, cb, exp = setup
    # a run of trial 7, recorded before a resume by an earlier owner of the job, must survive the cleanup
    earlier = tracker.start_child(exp, cb.parent_run_id, "job-x", 7, {"optim/lr": 0.5})
    create_run = tracker.client.create_run

    def applied_twice(*args: Any, **kwargs: Any) -> Any:  # the client re-sent a POST whose reply was lost
        create_run(*args, **kwargs)
        return create_run(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "create_run", applied_twice)
    trial = _trial({"optim": {"lr": 0.03}})
    cb.on_trial_start(0, [], trial)
    assert cb.flush(5.0)
    monkeypatch.setattr(tracker.client, "create_run", create_run)
    assert not cb.pending and cb.deferred == 0  # nothing failed as far as the callback knows
    cb.on_trial_complete(0, [], trial)
    before = tracker.client.search_runs([exp], filter_string="tags.`autoft.trial` = '0'")
    assert len(before) == 2

    cb.on_experiment_end([])
    children = tracker.client.search_runs([exp], filter_string="tags.`autoft.role` = 'trial'")
    assert sorted(r.info.run_id for r in children) == sorted([cb.events["t0"].mlflow_run_id, earlier])


def test_close_children_closes_only_the_runs_still_open(setup: tuple[Tracker, SearchCallback, str]) -> None:
    tracker, cb, exp = setup
    runs = [tracker.start_child(exp, cb.parent_run_id, "job-x", n, {}) for n in range(3)]
    tracker.end_run(runs[0], "FINISHED")
    assert sorted(tracker.open_children(cb.parent_run_id)) == sorted(runs[1:])
    assert tracker.close_children(cb.parent_run_id) == 2
    assert [tracker.client.get_run(r).info.status for r in runs] == ["FINISHED", "KILLED", "KILLED"]
    assert tracker.find_child(exp, cb.parent_run_id, 1) == runs[1] and tracker.find_child(exp, cb.parent_run_id, 9) is None


def test_the_grace_period_for_deferred_writes_comes_from_the_settings(
    setup: tuple[Tracker, SearchCallback, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, cb, _ = setup
    monkeypatch.setenv("AUTOFT_TRACKING_GRACE_SECONDS", "0")
    settings = Settings()
    assert settings.tracking_grace_seconds == 0.0
    quick = SearchCallback(**{**_callback_kwargs(cb), "grace_s": settings.tracking_grace_seconds})

    def down(*args: Any, **kwargs: Any) -> Any:
        raise MlflowException("connection refused")

    monkeypatch.setattr(tracker.client, "create_run", down)
    quick.on_trial_start(0, [], _trial({"optim": {"lr": 0.01}}))
    t0 = time.monotonic()
    quick.on_experiment_end([])
    assert time.monotonic() - t0 < 5.0  # no wait: the default grace would retry for two minutes
    assert quick.lost == ["trial 0: start", "trial 0: close"]  # the unfinished trial ends as interrupted


def test_a_negative_grace_period_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOFT_TRACKING_GRACE_SECONDS", "-1")
    with pytest.raises(ValidationError, match="tracking_grace_seconds"):
        Settings()


def _callback_kwargs(cb: SearchCallback) -> dict[str, Any]:
    names = ("tracker", "searcher", "listener", "job_id", "experiment_id", "parent_run_id", "metric")
    return {**{n: getattr(cb, n) for n in names}, "full_steps": cb.full_steps, "search": cb.search}


def test_a_slow_tracking_server_does_not_hold_up_the_search_and_keeps_the_order(
    setup: tuple[Tracker, SearchCallback, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, cb, exp = setup
    trial = _trial({"optim": {"lr": 0.04}})
    cb.on_trial_start(0, [], trial)
    assert cb.flush(5.0)
    log_batch = tracker.client.log_batch

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return log_batch(*args, **kwargs)

    monkeypatch.setattr(tracker.client, "log_batch", slow)
    t0 = time.monotonic()
    for step in (1, 2, 3):
        cb.on_trial_result(0, [], trial, {"ood_val/accuracy": step / 10, "step": step})
    cb.on_trial_complete(0, [], trial)
    assert time.monotonic() - t0 < 0.25  # the Tune loop went on: the writes wait for the writer thread
    assert cb.pending
    cb.on_experiment_end([])
    assert not cb.pending and cb.lost == [] and cb.deferred == 0
    run = tracker.client.get_run(cb.events["t0"].mlflow_run_id or "")
    history = tracker.client.get_metric_history(run.info.run_id, "ood_val/accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert run.info.status == "FINISHED" and run.data.tags["autoft.last_step"] == "3"
