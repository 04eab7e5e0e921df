"""CLI commands that talk to a running autoft server: submit, status, watch, cancel, extend, retry, report.

They take ``--url`` ($AUTOFT_URL) and ``--api-key`` ($AUTOFT_API_KEY).
"""

from __future__ import annotations

import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import yaml
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from autoft_service.api.schemas import JobDetail
from autoft_service.cli.common import console, out, results_table
from autoft_service.client import AutoFTClient
from autoft_service.errors import AutoFTError
from autoft_service.overrides import apply_overrides

T = TypeVar("T")

Url = Annotated[
    str,
    typer.Option("--url", envvar="AUTOFT_URL", help="Base URL of the autoft server ($AUTOFT_URL)."),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", envvar="AUTOFT_API_KEY", help="API key of your tenant ($AUTOFT_API_KEY)."),
]
JobId = Annotated[str, typer.Argument(help="Job id (as printed by 'autoft submit').")]
Interval = Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between polls.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def make_client(url: str, api_key: str | None) -> AutoFTClient:
    """The client the commands use (tests replace this)."""
    return AutoFTClient(url, api_key)


def _call(url: str, api_key: str | None, fn: Callable[[AutoFTClient], T]) -> T:
    """Run ``fn`` with a client; print a domain error and exit non-zero instead of a traceback."""
    try:
        with make_client(url, api_key) as client:
            return fn(client)
    except AutoFTError as e:
        where = f", field {e.field}" if e.field else ""
        console.print(f"[red]error[/red] ({e.code}{where}): {e.message}")
        raise typer.Exit(2 if e.code.startswith(("invalid", "unknown", "malformed")) else 1) from None


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _print_job(job: JobDetail) -> None:
    p = job.progress
    out.print(
        f"[bold]{job.name}[/bold]  {job.id}  [cyan]{job.state}[/cyan]"
        + (" (cancel requested)" if job.cancel_requested else "")
    )
    out.print(f"trials {p.trials_done}/{p.trials_total}   best {_fmt(p.best_value)}")
    if p.best_params:
        out.print(
            "best params: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.best_params.items()
            )
        )
    if job.error:
        out.print(f"[red]error:[/red] {job.error}")
    for label, link in (
        ("MLflow experiment", job.links.mlflow_experiment),
        ("MLflow run", job.links.mlflow_run),
    ):
        if link:
            out.print(f"{label}: {link}")
    rows = (job.results or {}).get("results")
    if job.state == "succeeded" and isinstance(rows, list) and rows:
        metric = str(job.spec.get("objective", {}).get("metric", "ood_val/accuracy")).split("/", 1)[1]
        try:
            out.print(results_table(rows, metric, f"{job.name}: test {metric} (%)"))
        except (KeyError, IndexError, TypeError, ValueError):  # an unexpected results shape: show it raw
            out.print_json(data=rows)


def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec file (YAML or JSON).")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option("--idempotency-key", help="Submit at most once for this key (safe to repeat)."),
    ] = None,
    watch_after: Annotated[
        bool, typer.Option("--watch", help="Follow the job's progress after submitting.")
    ] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="PATH=VALUE",
            help="Override a spec field, e.g. --set budget.trials=6 (dotted path, YAML value); repeatable.",
        ),
    ] = None,
) -> None:
    """Submit a job spec to the server and print the job id."""
    try:
        data = yaml.safe_load(spec.read_text())
    except (OSError, yaml.YAMLError) as e:
        console.print(f"[red]error[/red]: cannot read {spec}: {e}")
        raise typer.Exit(2) from None
    try:
        data = apply_overrides(data, overrides or [])
    except AutoFTError as e:
        console.print(f"[red]error[/red] ({e.code}, field {e.field}): {escape(e.message)}")
        raise typer.Exit(2) from None
    job = _call(url, api_key, lambda c: c.submit(data, idempotency_key=idempotency_key))
    console.print(f"[green]submitted[/green] {job.name} ({job.state})")
    out.print(job.id)
    if watch_after:
        watch(job.id, url=url, api_key=api_key)


def status(
    job_id: Annotated[str | None, typer.Argument(help="Job id; omit to list your jobs.")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    state: Annotated[str | None, typer.Option("--state", help="List only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="How many jobs to list.")] = 20,
) -> None:
    """Show one job (state, progress, best so far, results) or list your jobs."""
    if job_id is not None:
        _print_job(_call(url, api_key, lambda c: c.get_job(job_id)))
        return
    page = _call(url, api_key, lambda c: c.list_jobs(state=state, limit=limit))
    table = Table(title=f"jobs ({len(page.items)} of {page.total})")
    for col in ("id", "name", "state", "trials", "best", "created"):
        table.add_column(col)
    for j in page.items:
        table.add_row(
            j.id, j.name, j.state, f"{j.progress.trials_done}/{j.progress.trials_total}",
            _fmt(j.progress.best_value), j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )  # fmt: skip
    out.print(table)


def watch(job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None, interval: Interval = 2.0) -> None:
    """Follow a job with a progress bar (trials done / total, best so far) until it finishes."""

    def follow(client: AutoFTClient) -> JobDetail:
        columns = [
            TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
        ]  # fmt: skip
        job = None
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("queued", total=None, best="-")
            for job in client.iter_progress(job_id, interval=interval):
                p = job.progress
                progress.update(
                    bar, description=job.state, total=p.trials_total or None, completed=p.trials_done,
                    best=_fmt(p.best_value),
                )  # fmt: skip
        assert job is not None  # iter_progress yields at least once
        return job

    job = _call(url, api_key, follow)
    _print_job(job)
    if job.state != "succeeded":
        raise typer.Exit(1)


def cancel(job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Cancel a job (a queued job at once, a running one within seconds)."""
    job = _call(url, api_key, lambda c: c.cancel(job_id))
    out.print(f"{job.id}: {job.state}" + (" (cancel requested)" if job.state == "running" else ""))


def extend(
    job_id: JobId,
    trials: Annotated[int, typer.Option("--trials", min=1, max=10_000, help="Trials to add to the search.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Add trials to a job's search (a succeeded job runs again)."""
    job = _call(url, api_key, lambda c: c.extend(job_id, trials))
    out.print(f"{job.id}: {job.state}, {job.progress.trials_total} trials")


def retry(
    job_id: JobId,
    number: Annotated[int, typer.Argument(help="Number of the failed or pruned trial.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Run a failed or pruned trial again with the same parameters."""
    job = _call(url, api_key, lambda c: c.retry_trial(job_id, number))
    out.print(f"{job.id}: {job.state}, retry of trial {number} requested")


def report(
    job_id: JobId,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the report in the default web browser.")
    ] = False,
) -> None:
    """Print a short-lived signed link to a job's HTML report (no API key needed to open it)."""
    link = _call(url, api_key, lambda c: c.report_link(job_id))
    out.print(link.url, soft_wrap=True)
    console.print(f"valid until {link.expires_at:%Y-%m-%d %H:%M:%S %Z}")
    if open_it and not webbrowser.open(link.url):
        console.print("[yellow]no browser could be started: open the link above[/yellow]")


def register(app: typer.Typer) -> None:
    """Add the server commands to the main ``autoft`` CLI."""
    for fn in (submit, status, watch, cancel, extend, retry, report):
        app.command()(fn)
