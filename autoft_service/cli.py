"""The ``autoft`` command line: local runs (no server) and the service's client commands."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import uuid
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from autoft_service.errors import AutoFTError
from autoft_service.settings import Settings

app = typer.Typer(
    help="autoft-service: search robust fine-tuning objectives (AutoFT) on Ray Tune + Optuna + MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where the embedded stores live (default: $AUTOFT_DATA_DIR or ./.autoft)."
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", help="Ray cluster to use (default: $RAY_ADDRESS or a local one)."),
]


def _settings(data_dir: Path | None, ray_address: str | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if ray_address is not None:
        overrides["ray_address"] = ray_address
    return Settings(**overrides)


def demo_spec_path() -> Path:
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


def results_table(rows: list[dict[str, Any]], metric: str, title: str) -> Table:
    """Rows = methods; columns = ID test, OOD val, each OOD test, mean OOD test (for one metric)."""
    tests = [k.split("/")[1] for k in rows[0] if k.startswith("ood_test/") and k.endswith(f"/{metric}")]
    tests = [t for t in tests if t != "mean"]
    table = Table(title=title)
    table.add_column("method")
    cols = ["id_test", "ood_val", *[f"ood_test/{t}" for t in tests], "ood_test/mean"]
    for c in cols:
        header = {"id_test": "ID test", "ood_val": "OOD val", "ood_test/mean": "OOD mean"}.get(c, c[9:])
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(r["method"], *[f"{100 * r.get(f'{c}/{metric}', float('nan')):.1f}" for c in cols])
    return table


def _run(spec_path: Path, data_dir: Path | None, ray_address: str | None, resume: str | None) -> None:
    from autoft_service.engine import Engine, JobHandles
    from autoft_service.spec import load_spec_file

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        spec = load_spec_file(spec_path)
        settings = _settings(data_dir, ray_address)
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
        f"best trial #{result.best_trial}: {spec.objective.metric} = {result.best_value:.4f}; "
        f"trials {result.trials}; {time.time() - t0:.0f}s"
    )
    (settings.jobs_dir / job_id / "results.json").write_text(json.dumps(result.to_dict(), indent=2))
    if result.model_version:
        out.print(f"registered model autoft-{spec.name} version {result.model_version}")
    out.print(f"MLflow: mlflow ui --backend-store-uri {settings.tracking_uri}")


@app.command()
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


@app.command()
def demo(data_dir: DataDir = None, ray_address: RayAddress = None) -> None:
    """Run the built-in offline demo (few-shot digits under distribution shift)."""
    _run(demo_spec_path(), data_dir, ray_address, None)


@app.command("validate")
def validate(spec: Annotated[Path, typer.Argument(help="Job spec (YAML or JSON).")]) -> None:
    """Check a job spec without running it."""
    from autoft_service.spec import load_spec_file

    try:
        load_spec_file(spec)
    except AutoFTError as e:
        console.print(f"[red]invalid[/red] ({e.field}): {e.message}")
        raise typer.Exit(2) from None
    out.print("valid")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    runner: Annotated[
        bool,
        typer.Option("--runner/--no-runner", help="Also run jobs in this process (default) or only serve."),
    ] = True,
    data_dir: DataDir = None,
    ray_address: RayAddress = None,
) -> None:
    """Serve the REST API (and, by default, a runner that executes the queued jobs)."""
    import uvicorn

    from autoft_service.api.app import create_app
    from autoft_service.runner import Runner, readiness_checks
    from autoft_service.store import JobStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(data_dir, ray_address)
    settings.ensure_dirs()
    store = JobStore(settings.job_store_url)
    store.init_db()
    job_runner = Runner(settings, store) if runner else None
    api = create_app(settings=settings, store=store, readiness_checks=readiness_checks(settings, job_runner))
    if job_runner is not None:
        job_runner.start()
    try:
        uvicorn.run(api, host=host, port=port, log_level="info")
    finally:
        if job_runner is not None:
            job_runner.stop()


@app.command("runner")
def runner_cmd(data_dir: DataDir = None, ray_address: RayAddress = None) -> None:
    """Run queued jobs from the job store, without serving the API (scale runners independently)."""
    from autoft_service.runner import Runner
    from autoft_service.store import JobStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _settings(data_dir, ray_address)
    settings.ensure_dirs()
    store = JobStore(settings.job_store_url)
    store.init_db()
    r = Runner(settings, store)
    try:
        r.run_forever()
    except KeyboardInterrupt:
        r.stop_event.set()


# The machine's task cache ------------------------------------------------------------------------------------
cache_app = typer.Typer(
    help="Inspect and prune this machine's task cache (decoded images, frozen features, zero-shot heads). "
    "Every entry is recomputed when needed again; on a cluster, run it on each node.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
               "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}  # fmt: skip


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``45m``, ``12h``, ``30d``, ``2w`` -> seconds."""
    t = text.strip().lower()
    try:
        value, unit = float(t[:-1]), _DURATION_UNITS[t[-1:]]
    except (KeyError, ValueError):
        raise typer.BadParameter(
            f"{text!r} is not a duration like 30d, 12h, 45m or 90s", param_hint=option
        ) from None
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"{text!r}: must be a finite, non-negative duration", param_hint=option)
    return value * unit


def parse_size(text: str, option: str) -> int:
    """``500MB``, ``20G``, ``1.5TiB``, ``4096`` -> bytes (k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024)."""
    t = text.strip().lower().removesuffix("bytes").removesuffix("byte").removesuffix("b")
    num = t.rstrip("kmgti")
    try:
        value, unit = float(num), _SIZE_UNITS[t[len(num) :]]
    except (KeyError, ValueError):
        raise typer.BadParameter(f"{text!r} is not a size like 20GB, 500MiB or 4096", param_hint=option) from None
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"{text!r}: must be a finite, non-negative size", param_hint=option)
    return int(value * unit)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _age(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= (size := _DURATION_UNITS[unit]):
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


@cache_app.command("info")
def cache_info(data_dir: DataDir = None) -> None:
    """Entries and sizes per kind, with the age of each kind's least recently used entry."""
    from workers.disk_cache import cache_entries

    root = _settings(data_dir).cache_dir
    entries, now = cache_entries(root), time.time()
    table = Table(title=f"task cache {root}")
    for col in ("kind", "entries", "size", "least recently used"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for kind in sorted({e.kind for e in entries}):
        mine = [e for e in entries if e.kind == kind]
        oldest = min(e.last_used for e in mine)
        table.add_row(kind or ".", str(len(mine)), _bytes(sum(e.size for e in mine)), f"{_age(now - oldest)} ago")
    table.add_row("total", str(len(entries)), _bytes(sum(e.size for e in entries)), "", style="bold")
    out.print(table)


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Remove entries unused for this long (e.g. 30d, 12h).")
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option("--max-size", help="Then remove the least recently used until the cache fits (e.g. 50GB)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Remove cache entries by age and/or to fit a size; safe while jobs run (they recompute a miss)."""
    from workers.disk_cache import cache_entries, prune_cache

    if older_than is None and max_size is None:
        raise typer.BadParameter("give --older-than and/or --max-size", param_hint="--older-than/--max-size")
    age = parse_duration(older_than, "--older-than") if older_than is not None else None
    size = parse_size(max_size, "--max-size") if max_size is not None else None
    root = _settings(data_dir).cache_dir
    removed = prune_cache(root, older_than_s=age, max_bytes=size, dry_run=dry_run)
    for e in removed:
        out.print(f"{'would remove' if dry_run else 'removed'} {e.path.relative_to(root)} ({_bytes(e.size)})")
    left = cache_entries(root)
    out.print(
        f"{'would free' if dry_run else 'freed'} {_bytes(sum(e.size for e in removed))} in {len(removed)} "
        f"entries; {len(left)} entries, {_bytes(sum(e.size for e in left))} left"
    )


def _register_service_commands() -> None:
    try:
        from autoft_service import cli_service
    except ImportError:
        return
    cli_service.register(app)


_register_service_commands()


def main() -> None:
    app(prog_name="autoft")


if __name__ == "__main__":
    sys.exit(main())
