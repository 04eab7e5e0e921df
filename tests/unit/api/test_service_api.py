"""Health, readiness, Prometheus metrics, the catalog and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from autoft_service.api import create_app
from autoft_service.settings import Settings
from autoft_service.store import JobStore
from tests.suites.store_helpers import spec


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_readyz_reports_the_failing_check(settings: Settings, store: JobStore) -> None:
    def broken() -> None:
        raise ConnectionError("mlflow down")

    app = create_app(settings=settings, store=store, readiness_checks={"mlflow": broken, "ray": lambda: None})
    r = TestClient(app).get("/readyz")
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "backend_unavailable" and err["field"] == "mlflow"
    assert err["details"]["checks"] == {
        "database": "ok",
        "mlflow": "ConnectionError: mlflow down",
        "ray": "ok",
    }


def test_database_down_is_503_everywhere(settings: Settings, tmp_path: Path) -> None:
    broken = JobStore(f"sqlite:///{tmp_path}")  # a directory: every query fails
    dev = Settings(environment="development", auth_disabled=True, data_dir=tmp_path)
    client = TestClient(create_app(settings=dev, store=broken))
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["details"]["checks"]["database"] != "ok"
    r = client.get("/v1/jobs")
    assert r.status_code == 503 and r.json()["error"]["code"] == "backend_unavailable"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and _samples(metrics.text)[("autoft_store_up", ())] == 0
    assert client.get("/healthz").status_code == 200  # liveness does not depend on the database
    broken.close()


def test_metrics_follow_the_store(client: TestClient, store: JobStore, acme: dict[str, str]) -> None:
    job, _ = store.create_job("acme", spec())
    store.create_job("acme", spec("other"))
    store.claim_next_job("r1", 30)
    store.upsert_trial(job.id, 0, state="completed", started_at=1_900_000_000.0, finished_at=1_900_000_042.0)
    client.get("/v1/jobs", headers=acme)
    samples = _samples(client.get("/metrics").text)
    assert samples[("autoft_jobs_by_state", (("state", "queued"),))] == 1
    assert samples[("autoft_jobs_by_state", (("state", "running"),))] == 1
    assert samples[("autoft_trials_by_state", (("state", "completed"),))] == 1
    assert samples[("autoft_trial_duration_seconds_count", ())] == 1
    assert samples[("autoft_trial_duration_seconds_bucket", (("le", "30.0"),))] == 0
    assert samples[("autoft_trial_duration_seconds_bucket", (("le", "60.0"),))] == 1
    assert samples[("autoft_trial_duration_seconds_sum", ())] == pytest.approx(42, abs=1e-3)
    assert samples[("autoft_queue_wait_seconds_count", ())] == 1
    key = ("autoft_http_requests_total", (("method", "GET"), ("route", "/v1/jobs"), ("status", "200")))
    assert samples[key] == 1


def test_metrics_registries_are_per_app(settings: Settings, store: JobStore) -> None:
    a, b = (
        TestClient(create_app(settings=settings, store=store)),
        TestClient(create_app(settings=settings, store=store)),
    )
    a.get("/healthz")
    key = ("autoft_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))
    assert _samples(a.get("/metrics").text).get(key) == 1
    assert _samples(b.get("/metrics").text).get(key) is None


def test_catalog_lists_registries(client: TestClient, acme: dict[str, str]) -> None:
    cat = client.get("/v1/catalog", headers=acme).json()
    terms = {t["name"]: t for t in cat["loss_terms"]}
    assert {"ce", "hinge", "l2_init"} <= set(terms) and terms["l2_init"]["kind"] == "weights"
    assert all(t["summary"] for t in cat["loss_terms"])
    task = next(t for t in cat["tasks"] if t["name"] == "digits-shift")
    assert (
        task["params_schema"]["type"] == "object" and "shots_per_class" in task["params_schema"]["properties"]
    )
    metrics = {m["name"]: m["doc"] for m in cat["metrics"]}
    assert "accuracy" in metrics and metrics["accuracy"]


def test_catalog_lists_the_fine_tuning_methods(client: TestClient, acme: dict[str, str]) -> None:
    from workers.ft_methods import FT_METHODS

    methods = {m["name"]: m for m in client.get("/v1/catalog", headers=acme).json()["ft_methods"]}
    assert set(methods) == set(FT_METHODS.names())
    assert {"ft", "lp", "lp_ft", "wise_ft", "flyp"} <= set(methods)
    assert all(m["summary"] for m in methods.values())
    assert methods["lp"]["searchable"] is False and methods["wise_ft"]["searchable"] is False
    assert methods["flyp"]["requires_text_tower"] is True and methods["flyp"]["searchable"] is False
    assert methods["l2_sp"]["searchable"] is True and methods["l2_sp"]["search_space"]
    assert methods["l2_sp"]["params_schema"]["type"] == "object"
    # The catalog says exactly what a submission accepts in search.methods.
    for name, m in methods.items():
        r = client.post(
            "/v1/jobs", json={"name": "t1", "task": {"name": "digits-shift"}, "search": {"methods": [name]}},
            headers=acme,
        )  # fmt: skip
        assert (r.status_code == 202) == m["searchable"], (name, r.text)


def test_openapi_documents_spec_body_security_and_errors(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer" and schemes["APIKeyHeader"]["name"] == "X-API-Key"
    post = doc["paths"]["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobSpec"
    }
    assert "JobSpec" in doc["components"]["schemas"] and "BudgetSpec" in doc["components"]["schemas"]
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert {"202", "200", "401", "409", "413"} <= set(post["responses"])
    assert "security" in doc["paths"]["/v1/jobs/{job_id}"]["get"]
    assert "security" not in doc["paths"]["/v1/healthz"]["get"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    refs = str(doc)
    for ref in {part.split("'")[0] for part in refs.split("#/components/schemas/")[1:]}:
        assert ref in doc["components"]["schemas"], ref
