"""MLflow names: experiments and registered models are namespaced by tenant; runs say whose they are."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import mlflow.models
import pytest
import torch
from mlflow.tracking import MlflowClient

from autoft_service.settings import Settings
from autoft_service.tracking import (
    TENANT_TAG,
    Tracker,
    experiment_name,
    parent_run_name,
    registered_model_name,
    results_markdown,
)


@pytest.fixture
def tracker(tmp_path: Path) -> Tracker:
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "art").as_uri())
    t.ensure_store()
    return t


def test_names_never_collide_across_tenants() -> None:
    # tenants and job names share a character set without "/" and "~": the separators keep them apart
    assert experiment_name("a-b", "t") != experiment_name("b", "t-a")
    assert registered_model_name("c", "a-b") != registered_model_name("b-c", "a")
    assert registered_model_name("x", "acme") == "autoft~acme~x"
    assert experiment_name("x", "acme") == "autoft/acme/x"
    assert experiment_name("x") == "autoft/x" and registered_model_name("x") == "autoft-x"  # local runs
    assert "job-123" in parent_run_name("x", "job-123")


def test_same_job_name_two_tenants_two_experiments_tagged_runs(tracker: Tracker) -> None:
    a = tracker.experiment(experiment_name("demo", "acme"))
    b = tracker.experiment(experiment_name("demo", "globex"))
    assert a != b and tracker.experiment(experiment_name("demo", "acme")) == a
    assert tracker.client.get_experiment(a).tags["mlflow.experimentKind"] == "custom_model_development"
    parent = tracker.start_parent(a, "j1", parent_run_name("demo", "j1"), {"name": "demo"}, tenant="acme")
    child = tracker.start_child(a, parent, "j1", 0, {"optim/lr": 0.1}, tenant="acme")
    for rid in (parent, child):
        assert tracker.client.get_run(rid).data.tags[TENANT_TAG] == "acme"
    assert tracker.client.get_run(parent).info.run_name == "demo [j1]"


def test_an_old_experiment_is_tagged_for_the_model_training_view(tracker: Tracker) -> None:
    eid = MlflowClient(tracker.tracking_uri).create_experiment("autoft/acme/old")
    assert tracker.experiment("autoft/acme/old") == eid
    assert tracker.client.get_experiment(eid).tags["mlflow.experimentKind"] == "custom_model_development"


def test_registered_model_has_signature_and_description(tracker: Tracker) -> None:
    eid = tracker.experiment(experiment_name("demo", "acme"))
    rid = tracker.start_parent(eid, "j1", "demo [j1]", {"name": "demo"}, tenant="acme")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).eval()
    rows = [{"method": "autoft", "ood_test/mean/accuracy": 0.8}, {"method": "lp", "ood_test/mean/accuracy": 0.7}]
    description = "results\n\n" + results_markdown(rows)
    version = tracker.log_model(rid, model, torch.zeros(2, 3, 2, 2), "autoft~acme~demo", description)
    assert version == "1"
    mv = tracker.client.get_model_version("autoft~acme~demo", "1")
    assert "| autoft | 0.8000 |" in mv.description and "| lp | 0.7000 |" in mv.description
    assert tracker.client.get_registered_model("autoft~acme~demo").description == description
    sig = _signature(tracker.client.get_run(rid).info.artifact_uri)
    assert sig is not None
    assert sig.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, 2, 2)
    assert sig.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3)


def _signature(artifact_uri: str) -> mlflow.models.ModelSignature | None:
    return mlflow.models.Model.load(Path(urlparse(artifact_uri).path) / "model" / "MLmodel").signature


def test_job_links_have_a_working_default(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path)
    assert embedded.mlflow_ui_url == "http://127.0.0.1:5000"
    assert embedded.mlflow_ui_command == f"mlflow ui --backend-store-uri {embedded.tracking_uri}"
    server = Settings(data_dir=tmp_path, mlflow_tracking_uri="http://mlflow:5000")
    assert server.mlflow_ui_url == "http://mlflow:5000" and server.mlflow_ui_command is None
    assert Settings(data_dir=tmp_path, mlflow_ui_url="https://ml.example").mlflow_ui_url == "https://ml.example"


def test_serve_says_where_mlflow_links_point_and_how_to_start_the_ui(tmp_path: Path) -> None:
    from autoft_service.cli.serve import mlflow_ui_hint

    hint = mlflow_ui_hint(Settings(data_dir=tmp_path))
    assert "http://127.0.0.1:5000" in hint and "mlflow ui --backend-store-uri sqlite:///" in hint
    assert "mlflow ui" not in mlflow_ui_hint(Settings(data_dir=tmp_path, mlflow_tracking_uri="http://m:5000"))
