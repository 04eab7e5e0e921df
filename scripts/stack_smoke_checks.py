"""Checks of scripts/stack_smoke.sh against the running compose stack, over its published ports.

Standard library only (it runs on the host, outside the project's virtual environment). Each command prints
one JSON line with its figures and exits non-zero with a message naming what failed.

    stack_smoke_checks.py submit API KEY NAME TRIALS              -> {"id": ...}
    stack_smoke_checks.py wait-trials API KEY JOB N               a running job with >= N trials done
    stack_smoke_checks.py wait-job API KEY JOB TRIALS [SEEN.json] succeeded, every trial once, none lost/rerun
    stack_smoke_checks.py mlflow MLFLOW JOB.json TRIALS MODEL     parent + one child run per trial, the model
    stack_smoke_checks.py seen API KEY JOB OUT.json               the finished trials now (for wait-job)
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

TERMINAL = {"succeeded", "failed", "cancelled"}
FINISHED = {"completed", "pruned", "failed"}


def fail(message: str) -> None:
    print(f"CHECK FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def http(method: str, url: str, key: str | None = None, body: Any = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        fail(f"{method} {url}: HTTP {e.code} {e.read()[:500]!r}")


def spec(name: str, trials: int) -> dict[str, Any]:
    """A small job: the digits-shift demo task, two trials at a time, one baseline."""
    return {
        "name": name,
        "task": {"name": "digits-shift", "params": {"shots_per_class": 10, "ood_val_size": 60, "pretrain_steps": 40}},
        "search": {"sampler": {"seed": 0, "n_startup_trials": 3}},
        "budget": {
            "trials": trials, "inner_steps": 40, "eval_every": 10, "batch_size": 32, "max_concurrent": 2,
            "early_stopping": {"type": "none"},
        },
        "final": {"steps": 10, "baselines": ["ft"]},
    }  # fmt: skip


def job(api: str, key: str, job_id: str) -> dict[str, Any]:
    return http("GET", f"{api}/v1/jobs/{job_id}", key)


def trials(api: str, key: str, job_id: str) -> list[dict[str, Any]]:
    return http("GET", f"{api}/v1/jobs/{job_id}/trials?limit=100", key)["items"]


def wait(api: str, key: str, job_id: str, done: int | None, timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        j = job(api, key, job_id)
        if done is not None and j["state"] == "running" and j["progress"]["trials_done"] >= done:
            return j
        if j["state"] in TERMINAL:
            return j
        if time.time() > deadline:
            fail(f"job {job_id} still {j['state']} after {timeout:.0f}s: {j['progress']}")
        time.sleep(1)


def load(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def main(argv: list[str]) -> None:
    cmd, args = argv[0], argv[1:]
    if cmd == "submit":
        api, key, name, n = args
        created = http("POST", f"{api}/v1/jobs", key, spec(name, int(n)))
        print(json.dumps({"id": created["id"]}))
    elif cmd == "wait-trials":
        api, key, job_id, n = args
        j = wait(api, key, job_id, int(n), timeout=600)
        if j["state"] != "running":
            fail(f"job {job_id} ended ({j['state']}) before {n} trials were done: nothing left to interrupt")
        print(json.dumps({"state": j["state"], "trials_done": j["progress"]["trials_done"]}))
    elif cmd == "seen":
        api, key, job_id, out = args
        seen = {
            t["number"]: [t["params"], t["value"]] for t in trials(api, key, job_id) if t["state"] in FINISHED
        }
        with open(out, "w") as f:
            json.dump(seen, f)
        print(json.dumps({"finished": len(seen)}))
    elif cmd == "wait-job":
        api, key, job_id, n, *seen_file = args
        j = wait(api, key, job_id, None, timeout=900)
        if j["state"] != "succeeded":
            fail(f"job {job_id} {j['state']}: {j.get('error')}")
        items = trials(api, key, job_id)
        numbers = [t["number"] for t in items]
        finished = [t for t in items if t["state"] in FINISHED]
        duplicated = len(numbers) - len(set(numbers))
        seen = load(seen_file[0]) if seen_file else {}
        by_number = {str(t["number"]): t for t in items}
        rerun = [
            k for k, v in seen.items() if k not in by_number or [by_number[k]["params"], by_number[k]["value"]] != v
        ]  # fmt: skip
        lost = int(n) - len(finished)
        if duplicated or rerun or lost:
            fail(f"job {job_id}: {lost} trials lost, {duplicated} duplicated, rerun {rerun}")
        spans = sorted((t["started_at"], t["finished_at"]) for t in finished)
        overlapped = any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
        print(json.dumps({
            "id": job_id, "state": j["state"], "attempts": j.get("attempts"), "trials": len(finished),
            "interrupted": sum(t["state"] == "interrupted" for t in items), "lost": lost,
            "duplicated": duplicated, "rerun": len(rerun), "overlapped": overlapped,
            "experiment_id": j["mlflow_experiment_id"], "parent_run_id": j["mlflow_parent_run_id"],
        }))  # fmt: skip
    elif cmd == "mlflow":
        url, job_file, n, model = args
        j = load(job_file)
        runs: list[dict[str, Any]] = []
        token = None
        while True:
            body = {"experiment_ids": [j["experiment_id"]], "max_results": 1000}
            if token:
                body["page_token"] = token
            page = http("POST", f"{url}/api/2.0/mlflow/runs/search", body=body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                break
        parent = [r for r in runs if r["info"]["run_id"] == j["parent_run_id"]]
        children = [
            r for r in runs
            if any(t["key"] == "mlflow.parentRunId" and t["value"] == j["parent_run_id"] for t in r["data"].get("tags", []))
        ]  # fmt: skip
        if not parent or parent[0]["info"]["status"] != "FINISHED":
            fail(f"parent run {j['parent_run_id']} missing or not FINISHED in {url}")
        if len(children) < int(n):
            fail(f"{len(children)} child runs of {j['parent_run_id']}, expected at least {n}")
        if any(r["info"]["status"] == "RUNNING" for r in runs):
            fail("runs still RUNNING after the job succeeded")
        reg = http("GET", f"{url}/api/2.0/mlflow/registered-models/get?name={urllib.request.quote(model)}")
        versions = reg["registered_model"].get("latest_versions", [])
        if not versions:
            fail(f"registered model {model} has no version")
        print(
            json.dumps(
                {"runs": len(runs), "children": len(children), "model": model, "versions": len(versions)}
            )
        )
    else:
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
