"""A small real search through Ray Tune + Optuna + MLflow (SQLite stores), end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autoft_service.engine import Engine, JobHandles, JobListener, TrialEvent
from autoft_service.errors import InvalidSpec, JobCancelled
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from tests.conftest import LEAN_FINAL, small_spec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    yield
    ray.shutdown()


@pytest.fixture
def settings(tmp_path: Path, task_cache: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", task_cache_dir=task_cache, ray_num_cpus=2)


class Recorder(JobListener):
    def __init__(self, cancel_after: int | None = None) -> None:
        self.finished: list[TrialEvent] = []
        self.stages: list[str] = []
        self.saved: JobHandles | None = None
        self.cancel_after = cancel_after
        self.started: list[TrialEvent] = []
        self.started_after_cancel: list[int | None] = []

    def trial_started(self, ev: TrialEvent) -> None:
        if self.should_cancel():
            self.started_after_cancel.append(ev.number)
        self.started.append(ev)

    def handles(self, handles: JobHandles) -> None:
        self.saved = handles

    def stage(self, name: str, detail: dict) -> None:
        self.stages.append(name)

    def trial_finished(self, ev: TrialEvent) -> None:
        self.finished.append(ev)

    def should_cancel(self) -> bool:
        return self.cancel_after is not None and len(self.finished) >= self.cancel_after


def _runs(settings: Settings, experiment_id: str) -> list:
    return MlflowClient(settings.tracking_uri).search_runs([experiment_id], max_results=1000)


def test_search_end_to_end(ray_runtime: None, settings: Settings) -> None:
    final = {**small_spec()["final"], "wise_ft_alphas": [0.0, 0.5, 1.0], "soup_top_k": 2,
             "baseline_lr_grid": [0.3, 1.0]}  # fmt: skip
    # one trial at a time: ASHA sees the results in one order, so which trials complete (and feed the
    # soup) does not depend on timing
    budget = {**small_spec()["budget"], "max_concurrent": 1}
    spec = parse_spec(small_spec(final=final, budget=budget))
    rec = Recorder()
    result = Engine(settings).run(spec, job_id="job-e2e", listener=rec)

    # the Optuna study persisted in its RDB storage, with every trial of the budget
    study = optuna.load_study(study_name="autoft-job-e2e", storage=settings.optuna_url)
    states = [t.state for t in study.trials]
    assert len(states) == 6 and TrialState.RUNNING not in states
    # ASHA was fed and stopped at least one trial before the full inner budget
    pruned = [e for e in rec.finished if e.state == "pruned"]
    assert pruned and all(e.last_step < 30 for e in pruned)
    assert states.count(TrialState.PRUNED) == len(pruned)
    assert {e.state for e in rec.finished} <= {"completed", "pruned"}

    # MLflow: parent + one child per trial, all closed, with per-step metrics
    runs = _runs(settings, result.handles.experiment_id)
    parent = [r for r in runs if r.data.tags.get("autoft.role") == "job"]
    children = [r for r in runs if r.data.tags.get("autoft.role") == "trial"]
    assert len(parent) == 1 and len(children) == 6
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(c.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for c in children)
    assert {c.data.tags["autoft.state"] for c in children} == {"completed", "pruned"}
    client = MlflowClient(settings.tracking_uri)
    child = next(c for c in children if c.data.tags["autoft.state"] == "completed")
    history = client.get_metric_history(child.info.run_id, "ood_val/accuracy")
    assert [m.step for m in history] == [10, 20, 30]
    assert "optim/lr" in child.data.params
    artifacts = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert {"spec.yaml", "results.json", "model", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent[0].info.run_id, "plots")}
    assert {"plots/study.html", "plots/results.html"} <= plots  # one page for every study plot

    # the final model is registered; the results table has every method and every split
    assert result.model_version == "1"
    versions = client.search_model_versions("name='autoft-test-job'")
    assert len(versions) == 1 and versions[0].run_id == parent[0].info.run_id
    methods = [r["method"] for r in result.results]
    assert methods == ["autoft", "autoft_wise_ft", "autoft_soup", "ft", "lp", "lp_ft"]
    rows = {r["method"]: r for r in result.results}
    wise = rows["autoft_wise_ft"]
    assert wise["wise_ft/alpha"] in (0.0, 0.5, 1.0)
    if wise["wise_ft/alpha"] == 1.0:  # α = 1 is the AutoFT model itself
        assert wise["id_test/accuracy"] == pytest.approx(result.results[0]["id_test/accuracy"])
    # the start (the cross-validated probe = the lp row) is scored and never beaten by the WiSE-FT row
    start = result.selection["start"]  # scored by the search's first trial, in its worker
    assert start["ood_val/accuracy"] == pytest.approx(rows["lp"]["ood_val/accuracy"])
    assert all(rows["lp"][k] == pytest.approx(v) for k, v in start.items())  # every split, every interval
    assert wise["ood_val/accuracy"] >= start["ood_val/accuracy"] - 1e-9
    assert rows["lp"]["lp/C"] > 0 and "start/ood_val/accuracy" in parent[0].data.metrics
    assert rows["autoft_soup"]["ood_val/accuracy"] >= rows["autoft"]["ood_val/accuracy"] - 1e-9
    # baselines picked their LR from the grid on ID val; the selected row is an AutoFT row and registered
    base = spec.search.lr.base
    assert rows["ft"]["optim/lr"] in (pytest.approx(0.3 * base), pytest.approx(base))
    selected = [m for m, r in rows.items() if r["selected"]]
    assert selected == [result.selection["selected_row"]]
    assert selected[0] in ("autoft", "autoft_wise_ft", "autoft_soup")
    best_ood = max(rows[m]["ood_val/accuracy"] for m in ("autoft", "autoft_wise_ft", "autoft_soup"))
    assert rows[selected[0]]["ood_val/accuracy"] == best_ood
    tags = client.get_run(parent[0].info.run_id).data.tags
    assert tags["autoft.selected_row"] == selected[0]
    assert result.selection["chosen"] == result.best_trial and result.selection["rule"] == "one_se"
    assert rows["autoft"]["id_test/accuracy/ci_low"] <= rows["autoft"]["id_test/accuracy"]
    row = result.results[0]
    for key in ("id_test/accuracy", "ood_val/accuracy", "ood_test/blur/accuracy", "ood_test/mean/accuracy"):
        assert 0.0 <= row[key] <= 1.0
    assert result.best_params["loss/ce/weight"] == 1.0
    assert rec.stages == ["prepare", "search", "final"]


def test_resume_runs_only_missing_trials(ray_runtime: None, settings: Settings) -> None:
    spec = parse_spec(  # still in the sampler's random startup phase when extended
        small_spec(
            budget={**small_spec()["budget"], "trials": 3},
            final={**LEAN_FINAL, "steps": 10, "baselines": []},
            search={"sampler": {"seed": 0, "n_startup_trials": 8}},
        )
    )
    engine = Engine(settings)
    first = engine.run(spec, job_id="job-resume", listener=Recorder())
    study = optuna.load_study(study_name="autoft-job-resume", storage=settings.optuna_url)
    numbers_before = {t.number: t.params for t in study.trials}
    stale = study.ask()  # what a crash mid-trial leaves behind: a RUNNING trial

    rec = Recorder()
    second = engine.run(spec, job_id="job-resume", listener=rec, handles=first.handles, extra_trials=2)
    study = optuna.load_study(study_name="autoft-job-resume", storage=settings.optuna_url)
    assert study.trials[stale.number].state == TrialState.FAIL
    assert len(rec.finished) == 2  # only the 2 extra trials ran; the 3 finished ones were not rerun
    assert {t.number: t.params for t in study.trials if t.number in numbers_before} == numbers_before
    # the extended study continues its sampler: the new trials are new points, not replays of trials 0, 1
    new = [t.params for t in study.trials if t.number not in numbers_before and t.number != stale.number]
    assert len(new) == 2 and all(p not in numbers_before.values() for p in new)
    assert second.handles.parent_run_id == first.handles.parent_run_id


def test_cancel_stops_the_search_and_closes_runs(ray_runtime: None, settings: Settings) -> None:
    spec = parse_spec(small_spec(budget={**small_spec()["budget"], "trials": 20}))
    rec = Recorder(cancel_after=2)
    with pytest.raises(JobCancelled):
        Engine(settings).run(spec, job_id="job-cancel", listener=rec)
    assert rec.saved is not None
    runs = _runs(settings, rec.saved.experiment_id)
    assert len(runs) < 21
    assert all(r.info.status in ("FINISHED", "KILLED") for r in runs)
    parent = next(r for r in runs if r.data.tags.get("autoft.role") == "job")
    assert parent.info.status == "KILLED"
    # every trial that started also ended for the listener (the job store), and none started after
    assert {e.number for e in rec.started} == {e.number for e in rec.finished}
    assert rec.started_after_cancel == []


def test_warm_start_and_top_k_reevaluation(ray_runtime: None, settings: Settings) -> None:
    base = small_spec()["budget"]
    engine = Engine(settings)
    first = parse_spec(small_spec(budget={**base, "trials": 3}, final={**LEAN_FINAL, "steps": 5, "baselines": []}))
    engine.run(first, job_id="job-source", listener=Recorder())

    spec = parse_spec(
        small_spec(
            name="warm",
            search={"warm_start_from": ["job-source"], "sampler": {"seed": 1, "n_startup_trials": 1}},
            budget={**base, "trials": 2},
            final={**LEAN_FINAL, "steps": 5, "baselines": ["ft"], "reevaluate": {"top_k": 2, "seeds": [5]}},
        )
    )
    rec = Recorder()
    result = engine.run(spec, job_id="job-warm", listener=rec)
    study = optuna.load_study(study_name="autoft-job-warm", storage=settings.optuna_url)
    copied = [t for t in study.trials if t.user_attrs.get("autoft_warm_start_from") == "job-source"]
    source = optuna.load_study(study_name="autoft-job-source", storage=settings.optuna_url)
    assert len(copied) == len([t for t in source.trials if t.state == TrialState.COMPLETE])
    assert len(rec.finished) == 2  # the copies seed TPE but do not use the budget
    assert "reevaluate" in rec.stages
    own = {e.number for e in rec.finished if e.state == "completed"}
    assert 1 <= len(result.reevaluation) <= 2
    for row in result.reevaluation:
        assert row["trial"] in own and len(row["scores"]) == 2
        assert row["mean"] == pytest.approx(sum(row["scores"]) / 2)
    assert result.best_trial in own
    assert all("gap/accuracy" in r for r in result.results)

    bad = parse_spec(small_spec(name="warm2", search={"warm_start_from": ["nope"]}))
    with pytest.raises(InvalidSpec) as e:
        engine.run(bad, job_id="job-warm2", listener=Recorder())
    assert e.value.field == "search.warm_start_from.0"


def test_multi_objective_with_id_drop_constraint(ray_runtime: None, settings: Settings) -> None:
    spec = parse_spec(
        small_spec(
            name="pareto",
            objective={"metric": "ood_val/accuracy", "id_val_objective": True, "max_id_val_drop": 0.5},
            search={"methods": ["spd"], "sampler": {"seed": 0, "n_startup_trials": 3}},
            budget={**small_spec()["budget"], "trials": 6},
            final={
                **LEAN_FINAL, "steps": 5,
                "baselines": ["ft", "l2_sp", "spd", {"name": "wise_ft", "params": {"base": "ft"}}],
            },
        )
    )
    rec = Recorder()
    result = Engine(settings).run(spec, job_id="job-pareto", listener=rec)
    assert "reference" in rec.stages
    study = optuna.load_study(study_name="autoft-job-pareto", storage=settings.optuna_url)
    assert len(study.directions) == 2
    ref = study.user_attrs["ft_reference"]["id_val/accuracy"]
    assert 0.0 <= ref <= 1.0
    assert result.pareto, "the Pareto front is returned"
    front = {p["trial"] for p in result.pareto}
    assert result.best_trial in front
    for p in result.pareto:
        assert set(p["values"]) == {"ood_val/accuracy", "id_val/accuracy"}
    # no front member is dominated by another completed trial
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for p in result.pareto:
        a = list(p["values"].values())
        assert not any(
            all(x >= y for x, y in zip(t.values, a, strict=True)) and list(t.values) != a for t in done
        )
    best = next(t for t in study.trials if t.number == result.best_trial)
    assert best.user_attrs["metrics"]["id_val/accuracy"] >= ref - 0.5
    client = MlflowClient(settings.tracking_uri)
    plots = {a.path for a in client.list_artifacts(result.handles.parent_run_id, "plots")}
    assert {"plots/study.html", "plots/results.html"} <= plots
    # several baselines on the same budget, one row each; the method was a searched dimension
    assert [r["method"] for r in result.results] == ["autoft", "ft", "l2_sp", "spd", "wise_ft"]
    assert 0.0 <= next(r for r in result.results if r["method"] == "wise_ft")["wise_ft/alpha"] <= 1.0
    chosen = {t.params["method/name"] for t in study.trials}
    assert chosen <= {"adamw", "spd"} and "method/name" in result.best_params
    for t in study.trials:
        assert ("method/spd/strength" in t.params) == (t.params["method/name"] == "spd")
