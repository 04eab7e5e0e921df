"""The per-job HTML report: header, results table, charts, escaping, and ``GET /v1/jobs/{id}/report``."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from plotly.offline import get_plotlyjs

from autoft_service.api import create_app
from autoft_service.report import (
    NO_RESULTS,
    history_figure,
    id_ood_figure,
    param_distribution,
    param_importances,
    render_report,
    spec_distributions,
)
from autoft_service.settings import Settings
from autoft_service.store import JobStore
from tests.suites.report import (
    CHART_IDS,
    EXPECTED_TABLE,
    RESULTS,
    RESULTS_ROWS,
    chart_div,
    job_record,
    queued_job,
    table_cells,
    trial_records,
)
from tests.suites.store_helpers import migrated_sqlite_template, spec, sqlite_copy

PLOTLY_BANNER = get_plotlyjs()[:200]  # the licence banner that opens the bundle: one per copy


# The page ---------------------------------------------------------------------------------------------------
def test_results_table_has_every_method_in_percent() -> None:
    html = render_report(job_record(), trial_records())
    assert table_cells(html) == EXPECTED_TABLE


def test_header_names_the_job_objective_and_best_trial() -> None:
    html = render_report(job_record(), trial_records())
    for text in ("digits-autoft", "job123", "succeeded", "max ood_val/accuracy", "0.9300", "#3"):
        assert text in html, text


def test_every_chart_is_drawn_with_the_data_embedded() -> None:
    html = render_report(job_record(), trial_records())
    assert html.count('class="chart"') == 3
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}-plot"' in chart_div(html, chart_id)
        assert "Plotly.newPlot" in chart_div(html, chart_id)
    assert get_plotlyjs() in html and not re.search(r"<script[^>]*\ssrc=", html)  # works offline
    assert html.count(PLOTLY_BANNER) == 1  # one copy of plotly.js for the three charts


def test_user_strings_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    rows = [{**RESULTS_ROWS[0], "method": '<img src=x onerror="alert(2)">'}]
    job = job_record(name=evil, error="<b>boom</b>", results={**RESULTS, "results": rows})
    html = render_report(job, trial_records())
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in html
    assert "<b>boom</b>" not in html
    assert table_cells(html)[1][0] == '<img src=x onerror="alert(2)">'  # shown as text


def test_queued_job_without_trials_or_results() -> None:
    html = render_report(queued_job(), [])
    assert NO_RESULTS in html and "<table" not in html
    for chart_id in CHART_IDS:
        assert '<p class="note">' in chart_div(html, chart_id), chart_id
    assert "Plotly.newPlot" not in html
    assert "no finished trials yet" in chart_div(html, "history")
    assert "at least 2 completed trials (0 so far)" in chart_div(html, "importance")


def test_running_job_shows_best_trial_so_far() -> None:
    job = job_record(state="running", results=None, best_value=0.93)
    html = render_report(job, trial_records())
    assert NO_RESULTS in html and "#3" in html and "0.9300" in html
    assert "Plotly.newPlot" in chart_div(html, "history")
    assert "Plotly.newPlot" not in chart_div(html, "id-vs-ood")


def test_importances_skipped_with_one_completed_trial() -> None:
    trials = [t for t in trial_records() if t.number in (0, 2)]
    html = render_report(job_record(results=None), trials)
    assert "at least 2 completed trials (1 so far)" in chart_div(html, "importance")
    assert "Plotly.newPlot" in chart_div(html, "history")  # one completed and one pruned trial


# The charts' data -----------------------------------------------------------------------------------------------
def test_history_has_running_best_and_pruned_trials_apart() -> None:
    completed, best, pruned = history_figure(trial_records(), "ood_val/accuracy", "max").data
    assert list(completed.x) == [0, 1, 3, 5] and list(completed.y) == [0.6, 0.7, 0.93, 0.8]
    assert list(best.y) == [0.6, 0.7, 0.93, 0.93]
    assert list(pruned.x) == [2, 4] and pruned.marker.symbol == "x"
    _, best_min, _ = history_figure(trial_records(), "ood_val/accuracy", "min").data
    assert list(best_min.y) == [0.6, 0.6, 0.6, 0.6]


def test_importances_cover_the_varying_parameters() -> None:
    importances = param_importances(trial_records(), "max")
    assert set(importances) == {"loss/hinge/weight", "optim/lr", "train/seed"}  # loss/ce/weight is fixed
    assert sum(importances.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 completed"):
        param_importances(trial_records()[:1], "max")


def test_importances_with_a_categorical_parameter() -> None:
    trials = [
        dataclasses.replace(t, params={**t.params, "method/name": "spd" if t.number % 2 else "adamw"})
        for t in trial_records()
    ]
    assert "method/name" in param_importances(trials, "max")


def test_id_vs_ood_has_one_labelled_point_per_method_and_the_pareto_trials() -> None:
    pareto = [{"trial": 3, "values": {"ood_val/accuracy": 0.93, "id_val/accuracy": 0.9}}]
    methods, front = id_ood_figure(RESULTS_ROWS, pareto, "accuracy").data
    assert list(methods.text) == ["autoft", "ft", "lp"]
    assert list(methods.x) == pytest.approx([92.6, 97.0, 100.0])
    assert list(methods.y) == pytest.approx([75.85, 51.0, 85.0])
    assert list(front.text) == ["trial #3"] and list(front.x) == pytest.approx([90.0])


# The route --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_sqlite_template(tmp_path_factory.mktemp("report-template"))


@pytest.fixture
def store(sqlite_template: Path, tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(sqlite_copy(sqlite_template, tmp_path))
    yield s
    s.close()


@pytest.fixture
def client(store: JobStore, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings=Settings(environment="test", data_dir=tmp_path), store=store)) as c:
        yield c


@pytest.fixture
def finished_job(store: JobStore) -> str:
    """A succeeded job of tenant ``acme`` with the trials and results above; its id."""
    job, _ = store.create_job("acme", spec("digits-autoft"), None)
    store.mark_running(job.id)
    for t in trial_records(job.id):
        store.upsert_trial(job.id, t.number, state="running", params=t.params)
        store.upsert_trial(job.id, t.number, state=t.state if t.state != "running" else None, value=t.value)
    store.mark_succeeded(job.id, RESULTS)
    return job.id


def headers(store: JobStore, tenant: str) -> dict[str, str]:
    key, _ = store.create_api_key(tenant, "tests")
    return {"Authorization": f"Bearer {key}"}


def test_report_route_returns_the_page_to_the_owner(
    client: TestClient, store: JobStore, finished_job: str
) -> None:
    r = client.get(f"/v1/jobs/{finished_job}/report", headers=headers(store, "acme"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert table_cells(r.text) == EXPECTED_TABLE
    history = chart_div(r.text, "history")
    assert '"x":[0,1,3,5]' in history.replace(" ", "") and '"x":[2,4]' in history.replace(" ", "")


def test_report_route_is_tenant_scoped_and_needs_a_key(
    client: TestClient, store: JobStore, finished_job: str
) -> None:
    other = client.get(f"/v1/jobs/{finished_job}/report", headers=headers(store, "globex"))
    assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
    anonymous = client.get(f"/v1/jobs/{finished_job}/report")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    missing = client.get("/v1/jobs/nope/report", headers=headers(store, "acme"))
    assert missing.status_code == 404


def test_all_trials_reads_every_page(store: JobStore, finished_job: str) -> None:
    trials = store.all_trials("acme", finished_job, page_size=2)
    assert [t.number for t in trials] == [0, 1, 2, 3, 4, 5, 6]


def test_report_route_is_documented_as_html(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/report"]["get"]
    assert op["summary"] and op["description"].startswith("A job's report")
    assert "text/html" in op["responses"]["200"]["content"]
    assert "404" in op["responses"] and "401" in op["responses"]


def test_importances_take_the_distributions_from_the_jobs_spec() -> None:
    declared = spec_distributions(job_record().spec)
    assert declared, "the test spec's search space is parseable"
    for name, dist in declared.items():
        values = [t.params[name] for t in trial_records() if name in t.params]
        if len(set(values)) > 1:
            assert param_distribution(name, values, dist) is dist
    # a value outside the declared range (an older spec) falls back to the observed range
    lr = optuna.distributions.FloatDistribution(1.0, 2.0, log=True)
    assert param_distribution("optim/lr", [1e-3, 1e-2], lr) == optuna.distributions.FloatDistribution(
        1e-3, 1e-2, log=True
    )
    # no parseable spec: inferred by name (loss weights and the LR log-uniform)
    assert spec_distributions({"search": {"loss_terms": "not a list"}}) == {}
    assert spec_distributions(None) == {}
    assert set(param_importances(trial_records(), "max", declared)) == {
        "loss/hinge/weight",
        "optim/lr",
        "train/seed",
    }


# Signed report links ---------------------------------------------------------------------------------------
def link(client: TestClient, store: JobStore, job_id: str, tenant: str = "acme") -> dict[str, Any]:
    r = client.post(f"/v1/jobs/{job_id}/report-link", headers=headers(store, tenant))
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_signed_link_opens_the_report_without_a_key(
    client: TestClient, store: JobStore, finished_job: str
) -> None:
    made = link(client, store, finished_job)
    assert made["url"].startswith("http://testserver/v1/jobs/") and made["url"].endswith(made["path"])
    expires = datetime.fromisoformat(made["expires_at"])
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 900
    r = client.get(made["path"])  # no Authorization header
    assert r.status_code == 200 and table_cells(r.text) == EXPECTED_TABLE
    assert r.headers["referrer-policy"] == "no-referrer" and "no-store" in r.headers["cache-control"]
    assert r.text.count(PLOTLY_BANNER) == 1


def test_expired_forged_and_other_job_links_are_refused(
    client: TestClient, store: JobStore, finished_job: str
) -> None:
    from autoft_service.api import report_links

    key = client.app.state.report_link_key  # type: ignore[attr-defined]
    base = f"/v1/jobs/{finished_job}/report"
    expired = report_links.sign(key, finished_job, "acme", int(datetime.now(UTC).timestamp()) - 1)
    other, _ = store.create_job("acme", spec("other"), None)
    other_token = link(client, store, other.id)["path"].split("token=")[1]
    token = link(client, store, finished_job)["path"].split("token=")[1]
    exp, sig = token.split(".")
    forged = [
        f"{exp}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}",  # signature changed
        f"{int(exp) + 3600}.{sig}",  # expiry pushed back
        report_links.sign(b"not the key", finished_job, "acme", int(exp)),
        report_links.sign(key, finished_job, "globex", int(exp)),  # another tenant
        "garbage", "", f"{exp}.",
    ]  # fmt: skip
    for bad in [expired, other_token, *forged]:
        r = client.get(base, params={"token": bad})
        assert r.status_code == 401, (bad, r.text)
        assert r.json()["error"]["code"] == "unauthorized" and r.json()["error"]["field"] == "token"
    assert "expired" in client.get(base, params={"token": expired}).json()["error"]["message"]
    assert client.get(f"/v1/jobs/{other.id}/report", params={"token": other_token}).status_code == 200
    # An unknown job id answers like a forged token (no existence oracle) and a token opens nothing else.
    assert client.get("/v1/jobs/nope/report", params={"token": token}).status_code == 401
    assert client.get(f"/v1/jobs/{finished_job}", params={"token": token}).status_code == 401


def test_only_the_owner_can_make_a_link(client: TestClient, store: JobStore, finished_job: str) -> None:
    r = client.post(f"/v1/jobs/{finished_job}/report-link", headers=headers(store, "globex"))
    assert r.status_code == 404
    assert client.post(f"/v1/jobs/{finished_job}/report-link").status_code == 401


def test_links_survive_a_restart_with_a_configured_secret(
    store: JobStore, tmp_path: Path, finished_job: str
) -> None:
    from pydantic import SecretStr

    settings = Settings(environment="test", data_dir=tmp_path, report_link_secret=SecretStr("s" * 32))
    with TestClient(create_app(settings=settings, store=store)) as first:
        path = link(first, store, finished_job)["path"]
    with TestClient(create_app(settings=settings, store=store)) as second:
        assert second.get(path).status_code == 200
    with TestClient(
        create_app(settings=Settings(environment="test", data_dir=tmp_path), store=store)
    ) as other:
        assert other.get(path).status_code == 401  # another secret


def test_a_short_link_secret_is_refused() -> None:
    from pydantic import SecretStr, ValidationError

    with pytest.raises(ValidationError, match="report_link_secret"):
        Settings(environment="test", report_link_secret=SecretStr("short"))
