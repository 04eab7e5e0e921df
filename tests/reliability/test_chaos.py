"""Reliability: the runner killed at random points several times, and a Ray worker killed mid-trial.

Each test prints its figures (kills survived, trials lost / duplicated / rerun, time to finish)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autoft_service.engine import Engine, JobListener, TrialEvent
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from tests.conftest import LEAN_FINAL, small_spec
from tests.integration.service.conftest import api, make_stack, wait_state

pytestmark = pytest.mark.integration


def test_runner_killed_at_random_points_loses_nothing(tmp_path: Path, task_cache: Path) -> None:
    rng = random.Random(7)
    stack = make_stack(tmp_path, ("sqlite", f"sqlite:///{tmp_path / 'jobs.db'}"), task_cache)
    key = stack.create_key("acme")
    budget = 14
    spec = small_spec(
        name="chaos",
        budget={**small_spec()["budget"], "trials": budget, "inner_steps": 30},
        final={**LEAN_FINAL, "steps": 10, "baselines": ["ft"]},
    )
    kills, seen = 0, {}
    t0 = time.time()
    try:
        proc = stack.start()
        with api(stack, key) as c:
            job_id = c.post("/jobs", json=spec).json()["id"]
            done = 0
            for _ in range(3):  # three kill -9 at random moments of the search, each followed by a restart
                # a trial has finished since the last (re)start, unless the job ended meanwhile (its search may
                # have finished before the last kill: no trial is left to finish)
                deadline = time.time() + 180
                while (j := c.get(f"/jobs/{job_id}").json())["progress"]["trials_done"] <= done:
                    if j["state"] not in ("queued", "running"):
                        break
                    assert time.time() < deadline, (j["state"], j["progress"], stack.log_tail())
                    time.sleep(0.3)
                time.sleep(rng.uniform(0.2, 3.0))
                if c.get(f"/jobs/{job_id}").json()["state"] != "running":
                    break
                for t in c.get(f"/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]:
                    if t["state"] in ("completed", "pruned"):
                        seen[t["number"]] = (t["params"], t["value"])
                done = c.get(f"/jobs/{job_id}").json()["progress"]["trials_done"]
                stack.kill(proc)
                kills += 1
                proc = stack.start()
            job = wait_state(c, job_id, {"succeeded", "failed", "cancelled"}, timeout=600)
            items = c.get(f"/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]
    finally:
        stack.stop_all()
    assert job["state"] == "succeeded", (job.get("error"), stack.log_tail())
    numbers = [t["number"] for t in items]
    duplicated = len(numbers) - len(set(numbers))
    finished = [t for t in items if t["state"] in ("completed", "pruned", "failed")]
    rerun = [
        n
        for n, v in seen.items()
        if (t := next(x for x in items if x["number"] == n)) and (t["params"], t["value"]) != v
    ]
    assert kills >= 2 and job["attempts"] == kills + 1
    assert duplicated == 0 and not rerun and len(finished) == budget
    runs = MlflowClient(Settings(data_dir=stack.data_dir).tracking_uri).search_runs(
        [job["mlflow_experiment_id"]], max_results=1000
    )
    assert all(r.info.status != "RUNNING" for r in runs)
    lost = budget - len(finished)
    print(
        f"\n[chaos] {kills} kill -9 of the runner survived; trials: {budget} budgeted, {lost} lost, "
        f"{duplicated} duplicated, {len(rerun)} rerun, "
        f"{sum(t['state'] == 'interrupted' for t in items)} interrupted and replaced; {time.time() - t0:.0f}s"
    )


class _KillOneWorker(JobListener):
    """Kills one process running a trial (``process``: the Tune trial's relay or the resident worker that
    trains it) after the first report (once)."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.killed: int | None = None
        self.finished: list[TrialEvent] = []

    def trial_reported(self, ev: TrialEvent, metrics: dict[str, float]) -> None:
        if self.killed is None:
            out = subprocess.run(["pgrep", "-f", self.process], capture_output=True, text=True).stdout
            pids = [int(p) for p in out.split()]
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                self.killed = pids[0]

    def trial_finished(self, ev: TrialEvent) -> None:
        self.finished.append(ev)


@pytest.fixture
def ray_runtime() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("process", ["ray::ImplicitFunc", "ray::ResidentWorker.trial"])
def test_killed_ray_worker_trial_is_retried(
    ray_runtime: None, tmp_path: Path, task_cache: Path, process: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", task_cache_dir=task_cache)
    spec = parse_spec(
        small_spec(
            name="worker-kill",
            budget={**small_spec()["budget"], "trials": 3, "max_failures": 2, "inner_steps": 40,
                    "early_stopping": {"type": "none"}},
            final={**LEAN_FINAL, "steps": 5, "baselines": []},
        )
    )  # fmt: skip
    listener = _KillOneWorker(process)
    result = Engine(settings).run(spec, job_id="worker-kill", listener=listener)
    assert listener.killed is not None
    assert [e.state for e in listener.finished] == ["completed"] * 3  # the killed trial was retried
    assert result.trials.get("complete") == 3 and result.trials.get("fail", 0) == 0
    runs = MlflowClient(settings.tracking_uri).search_runs([result.handles.experiment_id], max_results=100)
    assert all(r.info.status == "FINISHED" for r in runs)
    print(f"\n[worker-kill] killed {process} pid {listener.killed}; 3/3 trials completed after retry")
