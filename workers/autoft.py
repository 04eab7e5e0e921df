"""One AutoFT objective run: a trial's config trained on a budget through the one shared training loop."""

from __future__ import annotations

from dataclasses import dataclass

from workers.accel import Accel
from workers.ft_methods import create_method, train_with_method
from workers.ft_methods.base import FTMethod, HeadInit
from workers.ft_methods.plain import PlainAdamW
from workers.ft_methods.train import MethodResult
from workers.prepared import PreparedTask
from workers.training import EvalCallback
from workers.trial_config import TrialConfig


@dataclass(frozen=True)
class RunBudget:
    """How long one run trains and what it reports: ``eval_every`` inner steps (0: only at the end) on
    ``eval_splits`` with ``metrics``."""

    steps: int
    batch_size: int
    metrics: tuple[str, ...] = ("accuracy",)
    eval_every: int = 0
    eval_splits: tuple[str, ...] = ("id_val", "ood_val")


def objective_method(config: TrialConfig, head: HeadInit = "lp") -> FTMethod:
    """The method a config trains with: its searched fine-tuning method (from ``head`` where the method has
    a choice) or plain AdamW from ``head``."""
    name = config.ft_method
    if name is None:
        return PlainAdamW(PlainAdamW.Params(head_init=head))
    m = create_method(name, config.method_params)
    if "head_init" in type(m.params).model_fields:
        m = create_method(name, {**config.method_params, "head_init": head})
    return m


def run_objective(
    prepared: PreparedTask,
    config: TrialConfig,
    budget: RunBudget,
    *,
    accel: Accel,
    on_eval: EvalCallback | None = None,
    head: HeadInit = "lp",
    reuse_model: bool = False,
    final_eval: bool = True,
) -> MethodResult:
    """Fine-tune the task's pretrained model with one searched objective (``config.loss_weights``, LR,
    weight decay, seed and method) for ``budget``; see :func:`~workers.ft_methods.train_with_method`."""
    return train_with_method(
        objective_method(config, head), prepared,
        steps=budget.steps, batch_size=budget.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        seed=config.seed, device=accel.device, metrics=budget.metrics, loss_weights=config.loss_weights,
        eval_every=budget.eval_every, eval_splits=budget.eval_splits, on_eval=on_eval, accel=accel,
        reuse_model=reuse_model, final_eval=final_eval,
    )  # fmt: skip
