"""MLflow tracking: an experiment per job, a parent run per job, a nested child run per trial.

Everything goes through an explicit ``MlflowClient(tracking_uri=...)`` owned by the driver; workers never
talk to MLflow, so a trial stopped by ASHA (whose code after its last report never runs) cannot leave a run
open: the driver closes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from autoft_service.errors import BackendUnavailable

log = logging.getLogger(__name__)

JOB_TAG = "autoft.job_id"
TRIAL_TAG = "autoft.trial"
PARENT_TAG = "mlflow.parentRunId"
_MAX_PARAM = 6000


class Tracker:
    """Thin, typed wrapper around one MLflow tracking store."""

    def __init__(self, tracking_uri: str, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location.rstrip("/") if artifact_location else None
        if tracking_uri.startswith(("http://", "https://")):
            # the engine retries and defers writes itself; the client's own retries (minutes of backoff)
            # would stall the search inside Tune's callbacks while a tracking server is down
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def ensure_store(self) -> None:
        """Create the store (schema migrations for a SQL store) once, from the driver, before any worker."""
        try:
            self.client.search_experiments(max_results=1)
        except MlflowException as e:
            raise BackendUnavailable(f"MLflow store {self.tracking_uri!r} unavailable: {e}") from e

    # Experiments and runs ------------------------------------------------------------------------------
    def experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = f"{self.artifact_location}/{name}" if self.artifact_location else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created concurrently by another driver
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def start_parent(self, experiment_id: str, job_id: str, run_name: str, spec: dict[str, Any]) -> str:
        run = self.client.create_run(
            experiment_id, run_name=run_name, tags={JOB_TAG: job_id, "autoft.role": "job"}
        )
        rid = run.info.run_id
        self.client.log_text(rid, yaml.safe_dump(spec, sort_keys=False), "spec.yaml")
        self.log_params(rid, _flatten_spec(spec))
        return rid

    def start_child(
        self,
        experiment_id: str,
        parent_run_id: str,
        job_id: str,
        number: int | None,
        params: dict[str, Any],
        *,
        retry: bool = False,
    ) -> str:
        """Create a trial's child run and log its params.

        With ``retry`` (an earlier attempt raised), a child already created for this trial is reused: a
        server that went down may have created the run and lost only the answer, or failed on the params.
        """
        rid = self.find_child(experiment_id, parent_run_id, number) if retry else None
        if rid is None:
            name = f"trial-{number:04d}" if number is not None else "trial"
            tags = {PARENT_TAG: parent_run_id, JOB_TAG: job_id, TRIAL_TAG: str(number), "autoft.role": "trial"}
            rid = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.log_params(rid, params)
        return rid

    def _children(
        self, experiment_id: str, parent_run_id: str, where: str = "", order_by: list[str] | None = None
    ) -> Iterator[Run]:
        """Every child run of ``parent_run_id`` (matching ``where``, if given), page by page."""
        query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'" + (f" and {where}" if where else "")
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=query, order_by=order_by, max_results=1000, page_token=token
            )
            yield from page
            token = page.token
            if not token:
                return

    def find_child(self, experiment_id: str, parent_run_id: str, number: int | None) -> str | None:
        """The oldest child run of ``parent_run_id`` recorded for trial ``number``, if any."""
        runs = self._children(
            experiment_id, parent_run_id, f"tags.`{TRIAL_TAG}` = '{number}'", ["attributes.start_time ASC"]
        )
        run = next(runs, None)
        return run.info.run_id if run is not None else None

    def delete_duplicate_children(self, experiment_id: str, parent_run_id: str, keep: dict[int, str]) -> int:
        """Delete the extra child runs of the trials in ``keep`` (trial number -> its run); return how many.

        A request the HTTP client retried after the server had applied it (a lost reply) creates a second
        run that nobody holds. Only the trials named in ``keep`` are touched: runs of trials recorded by an
        earlier owner of the job (before a resume) stay.
        """
        extra = []
        for r in self._children(experiment_id, parent_run_id):
            number = r.data.tags.get(TRIAL_TAG, "")
            if number.isdigit() and int(number) in keep and keep[int(number)] != r.info.run_id:
                extra.append(r.info.run_id)
        for rid in extra:
            self.client.delete_run(rid)
        return len(extra)

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int | None = None, timestamp_ms: int | None = None
    ) -> None:
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        items = [
            Metric(k, float(v), ts, step or 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Close a run (FINISHED, FAILED or KILLED); closing a closed run is a no-op."""
        run = self.client.get_run(run_id)
        if run.info.status == "RUNNING":
            self.client.set_terminated(run_id, status=status)

    def open_children(self, parent_run_id: str) -> list[str]:
        experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        runs = self._children(experiment_id, parent_run_id, "attributes.status = 'RUNNING'")
        return [r.info.run_id for r in runs]

    def close_children(self, parent_run_id: str, status: str = "KILLED") -> int:
        """Close every child run still RUNNING (after a crash or a cancel); return how many."""
        ids = self.open_children(parent_run_id)
        for rid in ids:
            self.client.set_terminated(rid, status=status)
        return len(ids)

    # Artifacts -------------------------------------------------------------------------------------------
    def log_json(self, run_id: str, obj: Any, path: str) -> None:
        self.client.log_text(run_id, json.dumps(obj, indent=2, sort_keys=True), path)

    def log_results_table(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        self.client.log_table(
            run_id, data={k: [r.get(k) for r in rows] for k in rows[0]}, artifact_file="results.json"
        )

    def log_model(
        self, run_id: str, model: Any, input_example: Any, registered_name: str | None
    ) -> str | None:
        """Save a PyTorch model under the run's ``model/`` artifacts and register a version of it."""
        import mlflow.pytorch

        # pickle format: the model classes are importable wherever the package is installed; MLflow's
        # generic warning about pickle is expected here and only noise in the job log
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            mlflow.pytorch.save_model(
                model,
                str(path),
                input_example=input_example,
                serialization_format="pickle",
                pip_requirements=["torch"],
            )
            self.client.log_artifacts(run_id, str(path), "model")
        if not registered_name:
            return None
        with contextlib.suppress(MlflowException):  # already registered: add a version
            self.client.create_registered_model(registered_name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        mv = self.client.create_model_version(registered_name, source=source, run_id=run_id)
        return str(mv.version)


def run_status_for(state: str) -> str:
    """Trial state → MLflow run status."""
    return {"completed": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}.get(state, "KILLED")


def _flatten_spec(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in spec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten_spec(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out
