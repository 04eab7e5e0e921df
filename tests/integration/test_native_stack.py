"""The compose services started natively (scripts/native_stack.sh): PostgreSQL databases, `mlflow server`,
a two-node Ray cluster, the API and a separate runner. A job submitted over HTTP runs on both Ray nodes and
its runs land in the MLflow server."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import small_spec
from tests.integration.service.conftest import REPO, free_port

pytestmark = pytest.mark.integration


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.removeprefix("export ").partition("=")
        out[k] = v
    return out


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory, task_cache: Path) -> Iterator[dict[str, str]]:
    d = Path(f"/tmp/afs-{os.getpid()}")  # short: Ray's socket paths must stay under 107 characters
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTOFT_", "RAY_"))}
    env.update(
        API_PORT=str(free_port()), MLFLOW_PORT=str(free_port()), RAY_PORT=str(free_port()),
        AUTOFT_TASK_CACHE_DIR=str(task_cache), STACK_DB_PREFIX=f"afs{os.getpid()}",
    )  # fmt: skip
    script = str(REPO / "scripts" / "native_stack.sh")
    try:
        res = subprocess.run([script, "up", str(d)], env=env, capture_output=True, text=True, timeout=300)
        logs = (
            "\n".join(p.read_text()[-2000:] for p in sorted((d / "logs").glob("*.log"))) if d.exists() else ""
        )
        assert res.returncode == 0, res.stdout + res.stderr + logs
        yield {**env, **_env_file(d / "stack.env"), "STACK_DIR": str(d)}
    finally:
        subprocess.run([script, "down", str(d)], env=env, capture_output=True, text=True, timeout=120)


def test_job_runs_on_a_two_node_ray_cluster_with_an_mlflow_server(stack: dict[str, str]) -> None:
    import ray

    key = subprocess.run(
        [str(REPO / ".venv" / "bin" / "autoft"), "keys", "create", "--tenant", "t", "--name", "n"],
        env=stack, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    spec = small_spec(
        name="native",
        budget={**small_spec()["budget"], "trials": 4, "inner_steps": 30, "max_concurrent": 2,
                "early_stopping": {"type": "none"}},
        final={"steps": 10, "baselines": ["ft"]},
    )  # fmt: skip
    with httpx.Client(
        base_url=stack["AUTOFT_URL"], headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as c:
        job_id = c.post("/v1/jobs", json=spec).json()["id"]
        deadline = time.time() + 400
        while time.time() < deadline:
            job = c.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(1)
        logs = Path(stack["STACK_DIR"], "logs", "runner.log").read_text()[-3000:]
        assert job["state"] == "succeeded", (job.get("error"), logs)
        trials = c.get(f"/v1/jobs/{job_id}/trials").json()["items"]

    # two Ray nodes with one CPU each; two trials overlapped in time, so both nodes ran trials
    ray.init(address=stack["AUTOFT_RAY_ADDRESS"], log_to_driver=False)
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2 and all(n["Resources"].get("CPU") == 1.0 for n in alive)
    finally:
        ray.shutdown()
    spans = sorted(
        (datetime.fromisoformat(t["started_at"]), datetime.fromisoformat(t["finished_at"])) for t in trials
    )
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), "no two trials ran at once"

    client = MlflowClient(stack["AUTOFT_MLFLOW_TRACKING_URI"])
    runs = client.search_runs([job["mlflow_experiment_id"]], max_results=100)
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
    artifacts = {a.path for a in client.list_artifacts(job["mlflow_parent_run_id"])}
    assert {"model", "results.json", "plots"} <= artifacts  # served by the MLflow server's artifact proxy
