"""Local runs, without a server: ``autoft run``, ``autoft demo`` and ``autoft validate``."""

from __future__ import annotations

import json
import logging
import time
import uuid
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from autoft_service.cli.common import DataDir, RayAddress, console, out, results_table, settings_for
from autoft_service.errors import AutoFTError


def demo_spec_path() -> Path:
    """The built-in demo job spec (shipped inside the package)."""
    return Path(str(files("autoft_service") / "demo" / "digits.yaml"))


class ProgressListener:
    """Drives a rich progress bar: trials done / total, best objective so far, ETA."""

    def __init__(self, progress: Progress, objective: str, mode: str, state_file: Path) -> None:
        from autoft_service.engine import JobListener

        self._base = JobListener()
        self.progress = progress
        self.objective = objective
        self.mode = mode
        self.state_file = state_file
        self.task = progress.add_task("preparing task", total=None, best="-")
        self.best: float | None = None
        self.done = 0

    def __getattr__(self, name: str) -> Any:  # any hook not defined here is a no-op
        return getattr(self._base, name)

    def handles(self, handles: Any) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(handles.__dict__))

    def stage(self, name: str, detail: dict[str, Any]) -> None:
        if name == "search":
            total = detail["trials_total"]
            self.done = total - detail["remaining"]
            self.progress.update(self.task, description="search", total=total, completed=self.done)
        elif name == "final":
            self.progress.update(self.task, description=f"final: {', '.join(detail['methods'])}")

    def trial_finished(self, ev: Any) -> None:
        self.done += 1
        if ev.state == "completed" and ev.value is not None:
            better = self.best is None or (
                ev.value > self.best if self.mode == "max" else ev.value < self.best
            )
            if better:
                self.best = ev.value
        best = "-" if self.best is None else f"{self.best:.4f}"
        self.progress.update(self.task, completed=self.done, best=best)


def _run(spec_path: Path, data_dir: Path | None, ray_address: str | None, resume: str | None) -> None:
    from autoft_service.engine import Engine, JobHandles
    from autoft_service.spec import load_spec_file

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = settings_for(data_dir, ray_address)
        spec = load_spec_file(spec_path, data_roots=settings.data_root_paths)
        job_id = resume or f"{spec.name}-{uuid.uuid4().hex[:8]}"
        state_file = settings.jobs_dir / job_id / "handles.json"
        handles = JobHandles(**json.loads(state_file.read_text())) if resume and state_file.exists() else None
        if resume and handles is None:
            raise AutoFTError(f"no local job {resume!r} under {settings.jobs_dir}", field="--resume")
        console.print(f"[bold]job[/bold] {job_id}  [dim]data: {settings.root}[/dim]")
        columns = [
            TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        ]  # fmt: skip
        t0 = time.time()
        with Progress(*columns, console=console, transient=False) as progress:
            listener = ProgressListener(progress, spec.objective.metric, spec.objective.mode, state_file)
            result = Engine(settings).run(spec, job_id=job_id, listener=listener, handles=handles)  # type: ignore[arg-type]
    except AutoFTError as e:
        console.print(f"[red]error[/red] ({e.code}{', field ' + e.field if e.field else ''}): {e.message}")
        raise typer.Exit(2) from None
    metric = spec.objective.metric_name
    out.print(results_table(result.results, metric, f"{spec.name}: test {metric} (%)"))
    out.print(
        f"chosen trial #{result.best_trial}: {spec.objective.metric} = {result.best_value:.4f}; "
        f"trials {result.trials}; {time.time() - t0:.0f}s"
    )
    sel = result.selection
    if sel:
        out.print(
            f"selection ({sel['rule']}): best raw trial #{sel['best']} ({sel['best_value']:.4f}); "
            f"{sel['reason']}; registered row: {sel['selected_row']}",
            highlight=False,
        )
    (settings.jobs_dir / job_id / "results.json").write_text(json.dumps(result.to_dict(), indent=2))
    if result.model_version:
        out.print(f"registered model autoft-{spec.name} version {result.model_version}")
    out.print(f"MLflow: mlflow ui --backend-store-uri {settings.tracking_uri}")


def run(
    spec: Annotated[Path, typer.Argument(help="Job spec (YAML or JSON).", exists=False)],
    data_dir: DataDir = None,
    ray_address: RayAddress = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Resume an interrupted local job by its id.")
    ] = None,
) -> None:
    """Run one AutoFT job locally, without a server, and print its results table."""
    _run(spec, data_dir, ray_address, resume)


def demo(data_dir: DataDir = None, ray_address: RayAddress = None) -> None:
    """Run the built-in offline demo (few-shot digits under distribution shift)."""
    _run(demo_spec_path(), data_dir, ray_address, None)


def validate(
    spec: Annotated[Path, typer.Argument(help="Job spec (YAML or JSON).")], data_dir: DataDir = None
) -> None:
    """Check a job spec without running it (files it names must lie inside the data roots)."""
    from autoft_service.spec import load_spec_file

    try:
        load_spec_file(spec, data_roots=settings_for(data_dir).data_root_paths)
    except AutoFTError as e:
        console.print(f"[red]invalid[/red] ({e.field}): {e.message}")
        raise typer.Exit(2) from None
    out.print("valid")


def register(app: typer.Typer) -> None:
    """Add the local commands to the main ``autoft`` CLI."""
    app.command()(run)
    app.command()(demo)
    app.command("validate")(validate)
