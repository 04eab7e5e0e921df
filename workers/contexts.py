"""What a job hands its workers: the validated, fixed part of every trial and final-stage run.

This module imports neither torch nor the training code, so a process that only passes a context on (the
Tune trial that relays to a resident worker, :mod:`workers.residents`) starts in a fraction of a second;
the heavy imports happen in :meth:`WorkerContext.start`, in the process that trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from workers.accel import Accel
    from workers.autoft import RunBudget
    from workers.prepared import PreparedTask

Precision = Literal["auto", "fp32", "bf16"]
OodAggregate = Literal["mean", "worst"]


class WorkerContext(BaseModel):
    """What every Ray task or trial of a job needs to find its task and its hardware."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_name: str
    task_params: dict[str, Any]
    cache_dir: str
    #: The folders the task may read user files from (the service's data roots); never the environment.
    data_roots: tuple[str, ...] = ()
    use_gpu: bool = False
    cpu_threads: int = 1
    precision: Precision = "auto"
    #: How the task's named OOD val sets (if any) make the ``ood_val/<metric>`` score.
    ood_val_aggregate: OodAggregate = "mean"
    #: Which version of the task's files this job reads (:meth:`~workers.tasks.base.Task.revision`): a
    #: process that loaded the task for an earlier job reloads it when this differs.
    revision: str = ""

    def accel(self) -> Accel:
        from workers.accel import Accel
        from workers.prepared import device_for

        return Accel.for_run(device_for(self.use_gpu), self.precision, self.cpu_threads)

    def start(self) -> tuple[Accel, PreparedTask]:
        """In the worker: size torch's thread pool to the CPUs given, pick the hardware path and load the
        task (once per process and revision)."""
        import torch

        from workers.prepared import prepared_task

        torch.set_num_threads(max(1, self.cpu_threads))
        accel = self.accel()
        return accel, prepared_task(
            self.task_name, self.task_params, self.cache_dir, accel.device, data_roots=self.data_roots,
            ood_val_aggregate=self.ood_val_aggregate, revision=self.revision,
        )  # fmt: skip


class TrialContext(WorkerContext):
    """The fixed part of every trial of one job.

    ``score_start``: each trial also sends the starting model's scores
    (:func:`~workers.prepared.start_scores`, computed once per process and task) with its first report
    under :data:`~workers.trial_config.START_RESULT_KEY`, so the job needs no worker of its own for that."""

    inner_steps: int
    eval_every: int
    batch_size: int
    metrics: tuple[str, ...]
    score_start: bool = False

    def budget(self) -> RunBudget:
        """One trial's budget, evaluated every ``eval_every`` steps."""
        from workers.autoft import RunBudget

        return RunBudget(self.inner_steps, self.batch_size, self.metrics, self.eval_every)


class FinalContext(WorkerContext):
    """The fixed part of every final-stage run of one job."""

    steps: int
    batch_size: int
    metrics: tuple[str, ...]
    base_lr: float
    baseline_weight_decay: float = 0.1
    seed: int = 0
    wise_ft_alphas: tuple[float, ...] = ()
    select_metric: str = "ood_val/accuracy"
