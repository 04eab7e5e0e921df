"""The service's processes: ``autoft serve`` (the REST API, with a runner by default) and ``autoft runner``."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from autoft_service.cli.common import DataDir, RayAddress, console, settings_for
from autoft_service.settings import Settings


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
    settings = settings_for(data_dir, ray_address)
    settings.ensure_dirs()
    store = JobStore(settings.job_store_url)
    store.init_db()
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
