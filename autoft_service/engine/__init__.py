"""The AutoFT engine: one job = prepare the task, search on Ray Tune + Optuna, retrain, compare, record.

``engine`` holds :class:`Engine` and its stages; ``events`` what it reports to a caller; ``ray_runtime`` the
Ray bootstrap; ``tracking_callback`` the driver-side Tune callback that writes MLflow; ``results`` the pure
helpers that build the job's results.
"""

from __future__ import annotations

from autoft_service.engine.engine import Engine
from autoft_service.engine.events import JobHandles, JobListener, JobResult, TrialEvent
from autoft_service.engine.ray_runtime import ensure_ray
from autoft_service.engine.tracking_callback import SearchCallback

__all__ = [
    "Engine",
    "JobHandles",
    "JobListener",
    "JobResult",
    "SearchCallback",
    "TrialEvent",
    "ensure_ray",
]
