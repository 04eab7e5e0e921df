"""The compose services started natively (scripts/native_stack.sh): PostgreSQL databases, `mlflow server`,
a two-node Ray cluster, the API and a separate runner. A job submitted over HTTP runs on both Ray nodes and
its runs land in the MLflow server."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import LEAN_FINAL, small_spec
from tests.integration.service.conftest import REPO

pytestmark = pytest.mark.integration


def test_job_runs_on_a_two_node_ray_cluster_with_an_mlflow_server(native_stack: dict[str, str]) -> None:
    import ray

    key = subprocess.run(
        [str(REPO / ".venv" / "bin" / "autoft"), "keys", "create", "--tenant", "t", "--name", "n"],
        env=native_stack, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    spec = small_spec(
        name="native",
        budget={**small_spec()["budget"], "trials": 4, "inner_steps": 30, "max_concurrent": 2,
                "early_stopping": {"type": "none"}},
        final={**LEAN_FINAL, "steps": 10, "baselines": ["ft"]},
    )  # fmt: skip
    with httpx.Client(
        base_url=native_stack["AUTOFT_URL"], headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as c:
        job_id = c.post("/v1/jobs", json=spec).json()["id"]
        deadline = time.time() + 400
        while time.time() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        logs = Path(native_stack["STACK_DIR"], "logs", "runner.log").read_text()[-3000:]
        assert job["state"] == "succeeded", (job.get("error"), logs)
        trials = c.get(f"/v1/jobs/{job_id}/trials").json()["items"]

    # two Ray nodes with one CPU each; two trials overlapped in time, so both nodes ran trials
    ray.init(address=native_stack["AUTOFT_RAY_ADDRESS"], log_to_driver=False)
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and all(n["Resources"].get("CPU") == 1.0 for n in alive)
    finally:
        ray.shutdown()
    spans = sorted(
        (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"])) for t in trials
    )
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), "no two trials ran at once"

    client = MlflowClient(native_stack["AUTOFT_MLFLOW_TRACKING_URI"])
    runs = client.search_runs([job["mlflow_experiment_id"]], max_results=100)
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
    artifacts = {a.path for a in client.list_artifacts(job["mlflow_parent_run_id"])}
    assert {"model", "results.json", "plots"} <= artifacts  # served by the MLflow server's artifact proxy
