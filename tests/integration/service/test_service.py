"""The service over real HTTP: a real uvicorn, runner, Ray and MLflow, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow.tracking import MlflowClient

from autoft_service.settings import Settings
from tests.conftest import LEAN_FINAL, small_spec
from tests.integration.service.conftest import Stack, api, make_stack, wait_state

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(
    backend_url: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, task_cache: Path
) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp(f"stack-{backend_url[0]}"), backend_url, task_cache)
    s.keys = {t: s.create_key(t) for t in ("acme", "globex")}  # type: ignore[attr-defined]
    s.start()
    yield s
    s.stop_all()


def _spec(name: str, trials: int = 4) -> dict:
    return small_spec(
        name=name,
        budget={**small_spec()["budget"], "trials": trials, "inner_steps": 20},
        final={**LEAN_FINAL, "steps": 10, "baselines": ["ft"]},
    )


def test_submit_runs_to_success_with_results(stack: Stack) -> None:
    with api(stack, stack.keys["globex"]) as g:  # type: ignore[attr-defined]
        # another tenant's job of the same name must not land in acme's experiment or registered model
        other = g.post("/jobs", json={**_spec("ok-job", trials=1), "final": {**LEAN_FINAL, "steps": 5, "baselines": []}})
        assert other.status_code == 202, other.text
    with api(stack, stack.keys["acme"]) as c:  # type: ignore[attr-defined]
        r = c.post("/jobs", json=_spec("ok-job"))
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["state"] == "queued"
        job = wait_state(c, job_id, {"succeeded", "failed"}, timeout=300)
        assert job["state"] == "succeeded", (job.get("error"), stack.log_tail())
        assert job["progress"]["trials_done"] == 4 and job["progress"]["trials_total"] == 4
        assert job["progress"]["best_value"] is not None
        rows = job["results"]["results"]
        assert [r["method"] for r in rows] == ["autoft", "ft"]
        assert "ood_test/mean/accuracy" in rows[0]

        trials = c.get(f"/jobs/{job_id}/trials", params={"limit": 2}).json()
        assert trials["total"] == 4 and len(trials["items"]) == 2
        all_trials = c.get(f"/jobs/{job_id}/trials").json()["items"]
        assert sorted(t["number"] for t in all_trials) == [0, 1, 2, 3]
        assert {t["state"] for t in all_trials} <= {"completed", "pruned"}

    tracking = Settings(data_dir=stack.data_dir).tracking_uri
    client = MlflowClient(tracking)
    runs = client.search_runs([job["mlflow_experiment_id"]], max_results=100)
    assert len(runs) == 5 and all(r.info.status == "FINISHED" for r in runs)
    _check_mlflow_names(stack, client, job, runs, other.json()["id"])
    import time

    deadline = time.time() + 30  # the report is attached right after the job is marked succeeded
    while "report.html" not in {a.path for a in client.list_artifacts(job["mlflow_parent_run_id"])}:
        assert time.time() < deadline, "report.html was not logged to the job's MLflow run"
        time.sleep(0.5)
    with api(stack, stack.keys["acme"]) as c:  # type: ignore[attr-defined]
        r = c.get(f"/jobs/{job_id}/report")
        assert (
            r.status_code == 200 and "ok-job" in r.text and r.headers["content-type"].startswith("text/html")
        )


def _check_mlflow_names(stack: Stack, client: MlflowClient, job: dict, runs: list, other_id: str) -> None:
    """Tenant-namespaced experiment and model, tenant tags, findable run names, a described model."""
    import mlflow.models

    exp = client.get_experiment(job["mlflow_experiment_id"])
    assert exp.name == "autoft/acme/ok-job"
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"  # model-training view
    assert {r.data.tags.get("autoft.tenant") for r in runs} == {"acme"}
    parent = next(r for r in runs if r.info.run_id == job["mlflow_parent_run_id"])
    assert job["id"] in parent.info.run_name
    # links work by default (the MLflow UI's default address), no AUTOFT_MLFLOW_UI_URL needed
    assert job["links"]["mlflow_experiment"] == f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}"

    with api(stack, stack.keys["globex"]) as g:  # type: ignore[attr-defined]
        theirs = wait_state(g, other_id, {"succeeded", "failed"}, timeout=300)
    assert theirs["state"] == "succeeded", theirs.get("error")
    assert theirs["mlflow_experiment_id"] != job["mlflow_experiment_id"]
    assert client.get_experiment(theirs["mlflow_experiment_id"]).name == "autoft/globex/ok-job"
    mine = client.search_model_versions("name='autoft~acme~ok-job'")
    assert [v.run_id for v in mine] == [job["mlflow_parent_run_id"]]
    assert [v.run_id for v in client.search_model_versions("name='autoft~globex~ok-job'")] == [
        theirs["mlflow_parent_run_id"]
    ]
    assert "| autoft |" in (mine[0].description or "") and "| ft |" in mine[0].description
    assert client.get_registered_model("autoft~acme~ok-job").description
    model = mlflow.models.Model.load(Path(urlparse(parent.info.artifact_uri).path) / "model" / "MLmodel")
    assert model.signature is not None and model.signature.inputs is not None


def test_idempotent_resubmit(stack: Stack) -> None:
    with api(stack, stack.keys["acme"]) as c:  # type: ignore[attr-defined]
        headers = {"Idempotency-Key": f"idem-{stack.backend}"}
        spec = _spec("idem-job", trials=1)
        first = c.post("/jobs", json=spec, headers=headers)
        second = c.post("/jobs", json=spec, headers=headers)
        assert first.status_code == 202 and second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        listed = c.get("/jobs", params={"limit": 100}).json()["items"]
        assert sum(j["name"] == "idem-job" for j in listed) == 1
        other = c.post("/jobs", json=_spec("idem-job-2", trials=1), headers=headers)
        assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"
        c.post(f"/jobs/{first.json()['id']}/cancel")


def test_auth_and_tenant_isolation(stack: Stack) -> None:
    with api(stack, stack.keys["acme"]) as acme, api(stack, stack.keys["globex"]) as globex:  # type: ignore[attr-defined]
        job_id = acme.post("/jobs", json=_spec("private", trials=1)).json()["id"]
        assert globex.get(f"/jobs/{job_id}").status_code == 404
        assert globex.post(f"/jobs/{job_id}/cancel").status_code == 404
        assert all(j["id"] != job_id for j in globex.get("/jobs").json()["items"])
        acme.post(f"/jobs/{job_id}/cancel")
    with api(stack, None) as anon:
        r = anon.get("/jobs")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    with api(stack, "aft_bogus_key") as bad:
        assert bad.get("/jobs").status_code == 401


def _utc(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def test_cancel_stops_a_running_job_within_seconds(stack: Stack) -> None:
    import time

    with api(stack, stack.keys["acme"]) as c:  # type: ignore[attr-defined]
        spec = _spec("to-cancel", trials=60)
        job_id = c.post("/jobs", json=spec).json()["id"]
        deadline = time.time() + 240
        while time.time() < deadline:
            job = c.get(f"/jobs/{job_id}").json()
            if job["state"] == "running" and job["progress"]["trials_done"] >= 1:
                break
            time.sleep(0.5)
        t0 = time.time()
        r = c.post(f"/jobs/{job_id}/cancel")
        assert r.status_code == 202
        accepted = _utc(r.json()["updated_at"])
        job = wait_state(c, job_id, {"cancelled", "failed", "succeeded"}, timeout=60)
        assert job["state"] == "cancelled", job
        assert time.time() - t0 < 30
        assert job["progress"]["trials_done"] < 60
        assert c.post(f"/jobs/{job_id}/cancel").status_code == 409  # already finished
        # every trial ended (none left "running"), and none started after the cancel was accepted
        trials = c.get(f"/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]
        assert trials and not [t for t in trials if t["state"] == "running"], trials
        late = [
            t for t in trials if _utc(t["started_at"]) > accepted + timedelta(seconds=0.5)
        ]
        assert not late, (accepted, late)
    tracking = Settings(data_dir=stack.data_dir).tracking_uri
    runs = MlflowClient(tracking).search_runs([job["mlflow_experiment_id"]], max_results=1000)
    mine = [r for r in runs if r.data.tags.get("autoft.job_id") == job_id]
    assert mine and all(r.info.status in ("FINISHED", "KILLED") for r in mine)


def test_bad_input_is_rejected_and_nothing_is_written(stack: Stack) -> None:
    with api(stack, stack.keys["globex"]) as c:  # type: ignore[attr-defined]
        before = c.get("/jobs").json()["total"]
        r = c.post("/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500 and "error" in r.json()
        r = c.post("/jobs", json=small_spec(search={"loss_terms": ["ce", "nope"]}))
        assert r.status_code == 422 and r.json()["error"]["field"] == "search.loss_terms.1"
        r = c.post("/jobs", json=small_spec(budget={"trials": 10**9}))
        assert r.status_code == 422 and r.json()["error"]["field"] == "budget.trials"
        r = c.post("/jobs", content=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.get("/jobs").json()["total"] == before


def test_extend_and_retry_continue_the_same_study(stack: Stack) -> None:
    with api(stack, stack.keys["acme"]) as c:  # type: ignore[attr-defined]
        job_id = c.post("/jobs", json=_spec("extend-me", trials=3)).json()["id"]
        job = wait_state(c, job_id, {"succeeded", "failed"}, timeout=300)
        assert job["state"] == "succeeded", job.get("error")
        first = {t["number"]: t["params"] for t in c.get(f"/jobs/{job_id}/trials").json()["items"]}

        r = c.post(f"/jobs/{job_id}/extend", json={"trials": 2})
        assert r.status_code in (200, 202), r.text
        job = wait_state(c, job_id, {"succeeded", "failed"}, timeout=300)
        items = c.get(f"/jobs/{job_id}/trials").json()["items"]
        assert job["state"] == "succeeded" and job["progress"]["trials_total"] == 5
        assert sorted(t["number"] for t in items) == [0, 1, 2, 3, 4]
        assert {t["number"]: t["params"] for t in items if t["number"] in first} == first  # not rerun

        again = [t for t in items if t["state"] in ("pruned", "failed")]
        if again:  # ASHA usually prunes one of five; a retry reruns exactly its config as a new trial
            n = again[0]["number"]
            assert c.post(f"/jobs/{job_id}/trials/{n}/retry").status_code in (200, 202)
            job = wait_state(c, job_id, {"succeeded", "failed"}, timeout=300)
            items = c.get(f"/jobs/{job_id}/trials").json()["items"]
            new = next(t for t in items if t["number"] == 5)
            searched = {k: v for k, v in again[0]["params"].items() if k != "loss/ce/weight"}
            assert {k: new["params"][k] for k in searched} == pytest.approx(searched)


def test_image_job_over_http_reads_only_its_data_root(stack: Stack) -> None:
    """A user's own (tiny) timm model and ImageFolder data, in the service's default data root
    (<data dir>/datasets), submitted over HTTP and run by the runner on Ray; a path outside is a 422."""
    from workers.images.synthetic_data import make_image_folder
    from workers.images.tiny_models import save_tiny_timm

    root = stack.data_dir / "datasets"
    if not (root / "vit").exists():
        save_tiny_timm(root / "vit")
        make_image_folder(root / "shapes" / "train", ["a", "b", "c"], 12, seed=1)
        make_image_folder(root / "shapes" / "test", ["a", "b", "c"], 4, seed=2)
        make_image_folder(root / "shapes" / "noisy", ["a", "b", "c"], 6, shift="noise", seed=3)
    data = {
        "id_train": {"format": "imagefolder", "path": "shapes/train"},
        "id_test": {"format": "imagefolder", "path": "shapes/test"},
        "ood_val": {"format": "imagefolder", "path": "shapes/noisy"},
        "ood_tests": {"noisy": {"format": "imagefolder", "path": "shapes/noisy"}},
    }
    spec = {
        "name": "image-job",
        "task": {"name": "image-classification",
                 "params": {"model": {"family": "timm", "path": "vit"}, "data": data, "id_val_size": 6}},
        "search": {"sampler": {"seed": 0, "n_startup_trials": 2}},
        "budget": {"trials": 2, "inner_steps": 6, "eval_every": 3, "batch_size": 8, "max_concurrent": 2,
                   "early_stopping": {"type": "none"}},
        "final": {**LEAN_FINAL, "steps": 6, "baselines": ["ft"]},
    }  # fmt: skip
    with api(stack, stack.keys["acme"]) as c:  # type: ignore[attr-defined]
        outside = {**data, "ood_val": {"format": "imagefolder", "path": str(stack.data_dir)}}
        bad = {**spec, "task": {**spec["task"], "params": {**spec["task"]["params"], "data": outside}}}
        r = c.post("/jobs", json=bad)
        assert r.status_code == 422 and r.json()["error"]["field"] == "task.params.data.ood_val.path"

        r = c.post("/jobs", json=spec)
        assert r.status_code == 202, r.text
        job = wait_state(c, r.json()["id"], {"succeeded", "failed"}, timeout=300)
        assert job["state"] == "succeeded", (job.get("error"), stack.log_tail())
        rows = job["results"]["results"]
        assert [r["method"] for r in rows] == ["autoft", "ft"]
        assert 0.0 <= rows[0]["ood_test/noisy/accuracy"] <= 1.0
