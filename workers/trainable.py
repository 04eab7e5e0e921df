"""What runs inside a trial: a short fine-tune from the pretrained weights, scored on OOD validation.

The Ray Tune function trainable receives a validated :class:`TrialContext` (never the environment) plus the
sampled config (read by :class:`~workers.trial_config.TrialConfig`). It reports after every ``eval_every``
inner steps, so an ASHA scheduler sees each rung; the reported ``step`` is the scheduler's time attribute.
"""

from __future__ import annotations

from typing import Any

from workers.autoft import RunBudget, run_objective
from workers.prepared import WorkerContext, score_start
from workers.trial_config import START_RESULT_KEY, TrialConfig, flatten_config

__all__ = ["TrialContext", "autoft_trial", "flatten_config"]

#: The prepared tasks (by identity: one per task and process) whose starting model this process scored.
_scored_start: set[int] = set()


class TrialContext(WorkerContext):
    """The fixed part of every trial of one job.

    ``score_start``: the first trial of each worker process also scores the starting model
    (:func:`~workers.prepared.score_start`) and sends it with its first report under
    :data:`~workers.trial_config.START_RESULT_KEY`, so the job needs no worker of its own for that."""

    inner_steps: int
    eval_every: int
    batch_size: int
    metrics: tuple[str, ...]
    score_start: bool = False

    def budget(self) -> RunBudget:
        """One trial's budget, evaluated every ``eval_every`` steps."""
        return RunBudget(self.inner_steps, self.batch_size, self.metrics, self.eval_every)


def autoft_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable for one AutoFT trial."""
    from ray import tune

    accel, prepared = ctx.start()
    start = None
    if ctx.score_start and id(prepared) not in _scored_start:
        _scored_start.add(id(prepared))
        start = score_start(prepared, accel, ctx.metrics)

    def report(step: int, metrics: dict[str, float]) -> None:
        nonlocal start
        extra = {START_RESULT_KEY: start} if start is not None else {}
        start = None
        tune.report({**metrics, **extra, "step": step})

    run_objective(
        prepared, TrialConfig.from_flat(config), ctx.budget(),
        accel=accel, on_eval=report, reuse_model=True, final_eval=False,
    )  # fmt: skip
