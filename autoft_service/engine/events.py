"""What the engine tells its caller: trial events, the ids a resumed job reuses, the listener, the result."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrialEvent:
    """One trial as the driver sees it. ``state``: running | completed | pruned | failed."""

    number: int | None
    tune_trial_id: str
    state: str
    params: dict[str, Any]
    value: float | None = None
    last_step: int = 0
    mlflow_run_id: str | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None


@dataclass
class JobHandles:
    """Ids in external stores that a resumed job must reuse."""

    experiment_id: str | None = None
    parent_run_id: str | None = None
    study_name: str | None = None
    #: the job's owner: its MLflow experiment and registered model are namespaced by it (None: a local run)
    tenant: str | None = None


class JobListener:
    """Receives progress from the engine (progress bar, job store). Every method is optional."""

    def handles(self, handles: JobHandles) -> None: ...
    def stage(self, name: str, detail: dict[str, Any]) -> None: ...
    def trial_started(self, ev: TrialEvent) -> None: ...
    def trial_reported(self, ev: TrialEvent, metrics: dict[str, float]) -> None: ...
    def trial_finished(self, ev: TrialEvent) -> None: ...
    def reconcile(self, finished: list[TrialEvent]) -> None:
        """On (re)start: every trial the study already finished, so a record that missed the trial's end
        (a crash between the study's update and the listener's) can be corrected."""

    def should_cancel(self) -> bool:
        return False

    def cancel_now(self) -> bool:
        """The up-to-date answer, asked before each new trial starts (``should_cancel`` may lag behind)."""
        return self.should_cancel()


@dataclass
class JobResult:
    job_id: str
    objective: str
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    results: list[dict[str, Any]]
    trials: dict[str, int]
    handles: JobHandles
    model_version: str | None = None
    durations: dict[str, float] = field(default_factory=dict)
    reevaluation: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[dict[str, Any]] = field(default_factory=list)
    #: How the final objective was chosen among the trials (the rule, the best raw trial and why).
    selection: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
