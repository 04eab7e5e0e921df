"""kill -9 the server (API + runner) mid-search, restart it: the job resumes and finishes, nothing lost or rerun."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autoft_service.settings import Settings
from tests.conftest import LEAN_FINAL, small_spec
from tests.integration.service.conftest import api, make_stack, wait_state

pytestmark = pytest.mark.integration


def test_kill_and_restart_resumes_the_job(
    backend_url: tuple[str, str], tmp_path: Path, task_cache: Path
) -> None:
    stack = make_stack(tmp_path, backend_url, task_cache)
    key = stack.create_key("acme")
    trials = 12
    spec = small_spec(
        name="survivor",
        budget={**small_spec()["budget"], "trials": trials, "inner_steps": 30, "max_concurrent": 2},
        final={**LEAN_FINAL, "steps": 10, "baselines": ["ft"]},
    )
    try:
        first = stack.start()
        with api(stack, key) as c:
            job_id = c.post("/jobs", json=spec).json()["id"]
            deadline = time.time() + 240
            while time.time() < deadline:
                items = c.get(f"/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]
                done = [t for t in items if t["state"] in ("completed", "pruned")]
                if len(done) >= 3:
                    break
                time.sleep(0.3)
            before = {t["number"]: (t["params"], t["value"]) for t in done}
            assert len(before) >= 3, stack.log_tail()
            assert c.get(f"/jobs/{job_id}").json()["state"] == "running"  # killed mid-search
        stack.kill(first)  # SIGKILL: no cleanup runs
        killed_at = time.time()

        stack.start()
        with api(stack, key) as c:
            job = wait_state(c, job_id, {"succeeded", "failed", "cancelled"}, timeout=400)
            assert job["state"] == "succeeded", (job.get("error"), stack.log_tail())
            assert job["attempts"] == 2  # claimed again after the lease of the dead runner expired
            items = c.get(f"/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]
        recovered_s = time.time() - killed_at
    finally:
        stack.stop_all()

    numbers = [t["number"] for t in items]
    assert len(numbers) == len(set(numbers)), "no trial is duplicated"
    after = {t["number"]: (t["params"], t["value"]) for t in items}
    for n, (params, value) in before.items():
        assert after[n] == (params, value), f"finished trial {n} was rerun or changed"
    counted = [t for t in items if t["state"] in ("completed", "pruned", "failed")]
    interrupted = [t for t in items if t["state"] == "interrupted"]
    assert len(counted) == trials, "the budget was finished, not more, not less"
    assert all(t["state"] != "running" for t in items)

    settings = Settings(data_dir=stack.data_dir)
    study = optuna.load_study(study_name=f"autoft-{job_id}", storage=settings.optuna_url)
    assert TrialState.RUNNING not in {t.state for t in study.trials}
    runs = MlflowClient(settings.tracking_uri).search_runs([job["mlflow_experiment_id"]], max_results=1000)
    assert all(r.info.status != "RUNNING" for r in runs), "every MLflow run is closed after recovery"
    parents = [r for r in runs if r.data.tags.get("autoft.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    print(
        f"\n[{stack.backend}] killed after {len(before)} finished trials; "
        f"{len(interrupted)} interrupted; recovered and finished in {recovered_s:.0f}s"
    )
