"""Reliability: the MLflow tracking server goes down mid-search; trials go on and their logs arrive once it
is back (no run missing, none left open, every reported step logged)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import LEAN_FINAL, small_spec
from tests.integration.service.conftest import REPO

pytestmark = pytest.mark.integration


def test_trials_continue_while_mlflow_is_down(native_stack: dict[str, str]) -> None:
    env, script = native_stack, str(REPO / "scripts" / "native_stack.sh")
    key = subprocess.run(
        [str(REPO / ".venv" / "bin" / "autoft"), "keys", "create", "--tenant", "t", "--name", "n"],
        env=env, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    budget = 6
    spec = small_spec(
        name="mlflow-outage",
        budget={
            **small_spec()["budget"],
            "trials": budget,
            "inner_steps": 30,
            "early_stopping": {"type": "none"},
        },
        final={**LEAN_FINAL, "steps": 10, "baselines": ["ft"]},
    )
    with httpx.Client(
        base_url=env["AUTOFT_URL"], headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as c:
        job_id = c.post("/v1/jobs", json=spec).json()["id"]
        deadline = time.time() + 300
        while c.get(f"/v1/jobs/{job_id}").json()["progress"]["trials_done"] < 1:
            assert time.time() < deadline
            time.sleep(0.3)
        subprocess.run([script, "mlflow-stop", env["STACK_DIR"]], env=env, check=True, timeout=60)
        down_at = time.time()
        done_while_down = c.get(f"/v1/jobs/{job_id}").json()["progress"]["trials_done"]
        deadline, want = time.time() + 300, min(done_while_down + 2, budget)
        while (j := c.get(f"/v1/jobs/{job_id}").json())["progress"]["trials_done"] < want:
            assert j["state"] == "running", (j["state"], j.get("error"))
            assert time.time() < deadline, "the search stalled while MLflow was down"
            time.sleep(0.3)
        time.sleep(max(0.0, 8.0 - (time.time() - down_at)))  # down at least 8 s
        outage = time.time() - down_at
        subprocess.run([script, "mlflow-start", env["STACK_DIR"]], env=env, check=True, timeout=180)
        deadline = time.time() + 400
        while (job := c.get(f"/v1/jobs/{job_id}").json())["state"] not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            assert time.time() < deadline
            time.sleep(1)
        events = c.get(f"/v1/jobs/{job_id}/events", params={"limit": 100}).json()["items"]
    runner_log = Path(env["STACK_DIR"], "logs", "runner.log").read_text()[-3000:]
    assert job["state"] == "succeeded", (job.get("error"), runner_log)
    client = MlflowClient(env["AUTOFT_MLFLOW_TRACKING_URI"])
    runs = client.search_runs([job["mlflow_experiment_id"]], max_results=100)
    children = [r for r in runs if r.data.tags.get("autoft.role") == "trial"]
    assert len(children) == budget and all(r.info.status == "FINISHED" for r in runs)
    for r in children:  # every evaluation (steps 10, 20, 30) reached the server, including those made offline
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "ood_val/accuracy")]
        assert steps == [10, 20, 30], (r.info.run_name, steps)
    tracking = [e for e in events if e["kind"] == "stage:tracking"]
    deferred = tracking[0]["data"]["deferred_writes"] if tracking else 0
    assert tracking and deferred > 0 and tracking[0]["data"]["lost"] == []
    print(f"\n[mlflow-outage] MLflow down {outage:.0f}s while trials ran; {deferred} writes deferred, 0 lost; "
          f"{budget}/{budget} child runs complete")  # fmt: skip
