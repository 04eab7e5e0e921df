"""The service's processes: ``autoft serve`` (the REST API, with a runner by default) and ``autoft runner``."""

from __future__ import annotations

import logging
import os
import secrets
from typing import TYPE_CHECKING, Annotated

import typer

from autoft_service.cli.common import DataDir, RayAddress, console, settings_for
from autoft_service.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI


#: ``autoft serve --workers N`` (N > 1): each worker process builds its app with this factory.
WORKER_APP = "autoft_service.cli.serve:worker_app"
#: The default ``--workers`` of an API-only server is the usable cores, at most this many.
MAX_DEFAULT_WORKERS = 8


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    runner: Annotated[
        bool,
        typer.Option("--runner/--no-runner", help="Also run jobs in this process (default) or only serve."),
    ] = True,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="API worker processes. Default: the usable cores (at most 8) with --no-runner, else 1. "
            "With the runner in this process it must be 1 (the runner is not forked into each worker): "
            "run `autoft serve --no-runner --workers N` and `autoft runner` side by side instead. Rate "
            "limits and the key cache are per worker process.",
        ),
    ] = None,
    data_dir: DataDir = None,
    ray_address: RayAddress = None,
) -> None:
    """Serve the REST API (and, by default, a runner that executes the queued jobs)."""
    import uvicorn

    from autoft_service.api.app import create_app
    from autoft_service.runner import Runner, readiness_checks
    from autoft_service.store import JobStore

    n_workers = workers if workers is not None else default_workers(runner)
    if runner and n_workers > 1:
        raise typer.BadParameter(
            f"{n_workers} workers need --no-runner: the runner runs inside the single serving process "
            "(start `autoft runner` separately to run jobs)",
            param_hint="--workers",
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_for(data_dir, ray_address)
    settings.ensure_dirs()
    store = JobStore(settings.job_store_url)
    store.init_db()
    if n_workers > 1:
        store.close()  # migrated once here; each worker opens its own
        readiness_checks(settings, None)  # creates an embedded MLflow store once, not in each worker at once
        os.environ.update(worker_env(settings))
        console.print(f"serving the API from {n_workers} worker processes")
        console.print(mlflow_ui_hint(settings))
        uvicorn.run(WORKER_APP, factory=True, workers=n_workers, host=host, port=port, log_level="info")
        return
    job_runner = Runner(settings, store) if runner else None
    api = create_app(settings=settings, store=store, readiness_checks=readiness_checks(settings, job_runner))
    if job_runner is not None:
        job_runner.start()
    console.print(mlflow_ui_hint(settings))
    try:
        uvicorn.run(api, host=host, port=port, log_level="info")
    finally:
        if job_runner is not None:
            job_runner.stop()


def default_workers(runner: bool) -> int:
    """``--workers`` when not given: 1 with the runner in the process, else the usable cores (at most 8)."""
    if runner:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment that makes every worker process build the same app as this one: the resolved data
    directory and Ray address of the command line, and one report-link secret for all of them (a link
    signed by one worker must open on any other; without AUTOFT_REPORT_LINK_SECRET each would draw its
    own)."""
    env = {"AUTOFT_DATA_DIR": str(settings.root)}
    if settings.ray_address:
        env["AUTOFT_RAY_ADDRESS"] = settings.ray_address
    if settings.report_link_secret is None:
        env["AUTOFT_REPORT_LINK_SECRET"] = secrets.token_urlsafe(32)
    return env


def worker_app() -> FastAPI:
    """The app of one ``autoft serve --workers N`` worker process, from the settings in its environment
    (set by :func:`worker_env` in the parent, which also migrated the job store)."""
    from autoft_service.api.app import create_app
    from autoft_service.runner import readiness_checks
    from autoft_service.store import JobStore

    settings = Settings()
    store = JobStore(settings.job_store_url)
    return create_app(settings=settings, store=store, readiness_checks=readiness_checks(settings, None))


def runner_cmd(data_dir: DataDir = None, ray_address: RayAddress = None) -> None:
    """Run queued jobs from the job store, without serving the API (scale runners independently)."""
    from autoft_service.runner import Runner
    from autoft_service.store import JobStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_for(data_dir, ray_address)
    settings.ensure_dirs()
    store = JobStore(settings.job_store_url)
    store.init_db()
    r = Runner(settings, store)
    try:
        r.run_forever()
    except KeyboardInterrupt:
        r.stop_event.set()


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``runner`` to the main ``autoft`` CLI."""
    app.command()(serve)
    app.command("runner")(runner_cmd)


def mlflow_ui_hint(settings: Settings) -> str:
    """Where job responses link MLflow, and how to start that UI over the embedded store."""
    line = f"MLflow links in job responses point at {settings.mlflow_ui_url}"
    if settings.mlflow_ui_command:
        line += f"; start the UI there with: {settings.mlflow_ui_command}"
    return line
