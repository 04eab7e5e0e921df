"""Reliability: PostgreSQL (the job store) restarts in the middle of a running job; the job finishes."""

from __future__ import annotations

import glob
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import LEAN_FINAL, small_spec
from tests.integration.service.conftest import api, make_stack, wait_state

pytestmark = pytest.mark.integration


def _restart_postgres() -> float:
    """Restart the local PostgreSQL cluster (what the machine's services use); return the outage in s."""
    version = os.path.basename(sorted(glob.glob("/etc/postgresql/*"))[-1])
    t0 = time.time()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120,
        capture_output=True,
    )  # fmt: skip
    return time.time() - t0


def test_job_survives_a_postgres_restart(postgres_url: str, tmp_path: Path, task_cache: Path) -> None:
    stack = make_stack(tmp_path, ("postgres", postgres_url), task_cache)
    key = stack.create_key("acme")
    budget = 8
    spec = small_spec(name="pg-restart", budget={**small_spec()["budget"], "trials": budget, "inner_steps": 30},
                      final={**LEAN_FINAL, "steps": 10, "baselines": ["ft"]})  # fmt: skip
    try:
        stack.start()
        with api(stack, key) as c:
            job_id = c.post("/jobs", json=spec).json()["id"]
            deadline = time.time() + 180
            while c.get(f"/jobs/{job_id}").json()["progress"]["trials_done"] < 2:
                assert time.time() < deadline, stack.log_tail()
                time.sleep(0.3)
            outage = _restart_postgres()
            job = wait_state(c, job_id, {"succeeded", "failed", "cancelled"}, timeout=400)
            items = c.get(f"/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]
    finally:
        stack.stop_all()
    assert job["state"] == "succeeded", (job.get("error"), stack.log_tail())
    numbers = [t["number"] for t in items]
    finished = [t for t in items if t["state"] in ("completed", "pruned", "failed")]
    assert len(numbers) == len(set(numbers)) and len(finished) == budget
    print(
        f"\n[pg-restart] PostgreSQL restarted mid-job ({outage:.1f}s); {len(finished)}/{budget} trials, job succeeded"
    )
