"""The service CLI commands (submit, status, cancel, keys) against the app, and their help text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient
from typer.main import get_command
from typer.testing import CliRunner

from autoft_service.cli import keys, service
from autoft_service.client import AutoFTClient
from autoft_service.store import JobStore
from tests.suites.store_helpers import spec

runner = CliRunner()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, client: TestClient) -> typer.Typer:
    monkeypatch.setattr(service, "make_client", lambda url, key: AutoFTClient(url, key, http=client))
    app = typer.Typer()
    service.register(app)
    keys.register(app)
    return app


def test_submit_status_cancel(cli: typer.Typer, store: JobStore, tmp_path: Path) -> None:
    key, _ = store.create_api_key("acme", "cli")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: from-cli\ntask: {name: digits-shift}\nbudget: {trials: 3}\n")
    r = runner.invoke(cli, ["submit", str(spec_file), "--api-key", key])
    assert r.exit_code == 0, r.output
    job_id = r.stdout.strip().splitlines()[-1]
    assert store.get_job("acme", job_id).name == "from-cli"
    r = runner.invoke(cli, ["status", job_id, "--api-key", key])
    assert r.exit_code == 0 and "queued" in r.stdout and "0/3" in r.stdout
    r = runner.invoke(cli, ["status", "--api-key", key])
    assert r.exit_code == 0 and job_id in r.stdout
    r = runner.invoke(cli, ["cancel", job_id], env={"AUTOFT_API_KEY": key})
    assert r.exit_code == 0 and store.get_job(None, job_id).state == "cancelled"


def test_submit_set_overrides_the_spec(cli: typer.Typer, store: JobStore, tmp_path: Path) -> None:
    key, _ = store.create_api_key("acme", "cli")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: from-cli\ntask: {name: digits-shift}\nbudget: {trials: 3, inner_steps: 40}\n")
    args = ["submit", str(spec_file), "--api-key", key, "--set", "budget.trials=6", "--set", "name=renamed"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    job = store.get_job("acme", r.stdout.strip().splitlines()[-1])
    assert (job.name, job.trials_total, job.spec["budget"]["inner_steps"]) == ("renamed", 6, 40)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("budget.trails=6", "budget.trails"),
        ("budget.trials='6'", "budget.trials"),
        ("budget.trials", "--set"),
    ],
)
def test_submit_set_refuses_bad_overrides_before_sending(
    cli: typer.Typer, store: JobStore, tmp_path: Path, override: str, field: str
) -> None:
    key, _ = store.create_api_key("acme", "cli")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: from-cli\ntask: {name: digits-shift}\n")
    r = runner.invoke(cli, ["submit", str(spec_file), "--api-key", key, "--set", override])
    assert r.exit_code == 2 and f"field {field}" in r.output, r.output
    assert store.list_jobs(None)[1] == 0


def test_watch_prints_the_results_of_a_finished_job(cli: typer.Typer, store: JobStore) -> None:
    key, _ = store.create_api_key("acme", "cli")
    job, _ = store.create_job("acme", spec("watched"))
    store.claim_next_job("r1", 30)
    row = {
        "method": "autoft",
        "id_test/accuracy": 0.9,
        "ood_val/accuracy": 0.8,
        "ood_test/mean/accuracy": 0.7,
    }
    store.mark_succeeded(job.id, {"best_value": 0.8, "results": [{**row, "ood_test/blur/accuracy": 0.7}]})
    r = runner.invoke(cli, ["watch", job.id, "--api-key", key, "--interval", "0.1"])
    assert r.exit_code == 0, r.output
    assert "succeeded" in r.stdout and "autoft" in r.stdout and "90.0" in r.stdout
    failed, _ = store.create_job("acme", spec("doomed"))
    store.claim_next_job("r1", 30)
    store.mark_failed(failed.id, "ValueError: boom")
    r = runner.invoke(cli, ["watch", failed.id, "--api-key", key])
    assert r.exit_code == 1 and "boom" in r.stdout


def test_errors_exit_non_zero_with_the_message(cli: typer.Typer, store: JobStore, tmp_path: Path) -> None:
    key, _ = store.create_api_key("acme", "cli")
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("name: x\ntask: {name: digits-shift}\nsearch: {loss_terms: [nope]}\n")
    r = runner.invoke(cli, ["submit", str(spec_file), "--api-key", key])
    assert r.exit_code == 2 and "search.loss_terms.0" in r.output
    r = runner.invoke(cli, ["status", "0" * 32, "--api-key", key])
    assert r.exit_code == 1 and "job_not_found" in r.output
    assert store.list_jobs(None)[1] == 0


def test_keys_create_writes_a_working_key(
    cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTOFT_DATABASE_URL", raising=False)
    r = runner.invoke(
        cli, ["keys", "create", "--tenant", "acme", "--name", "ci", "--data-dir", str(tmp_path)]
    )
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[-1]
    store = JobStore(f"sqlite:///{tmp_path / 'autoft.db'}")
    try:
        assert store.authenticate(key) == "acme"
    finally:
        store.close()
    r = runner.invoke(cli, ["keys", "list", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0 and "acme" in r.stdout and key not in r.stdout


def test_every_option_has_help(cli: typer.Typer) -> None:
    seen: list[str] = []

    def walk(cmd: Any) -> None:  # typer vendors click: walk by duck type
        for p in cmd.params:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help, f"{cmd.name} {p.name}"
                seen.append(f"{cmd.name} {p.name}")
        for sub in getattr(cmd, "commands", {}).values():
            assert sub.help, sub.name
            walk(sub)

    walk(get_command(cli))
    assert {"submit url", "submit api_key", "submit overrides", "create tenant", "watch interval"} <= set(
        seen
    )


def test_report_prints_a_signed_link_and_opens_it(
    cli: typer.Typer, client: TestClient, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    key, _ = store.create_api_key("acme", "cli")
    job, _ = store.create_job("acme", spec("reported"))
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda u: opened.append(u) or True)
    r = runner.invoke(cli, ["report", job.id, "--api-key", key, "--open"])
    assert r.exit_code == 0, r.output
    link = r.stdout.strip().splitlines()[-1]
    assert opened == [link] and "token=" in link
    page = client.get(link.removeprefix("http://testserver"))  # no key: the token is enough
    assert page.status_code == 200 and "reported" in page.text
    r = runner.invoke(cli, ["report", "nope", "--api-key", key])
    assert r.exit_code == 1 and "job_not_found" in r.output
