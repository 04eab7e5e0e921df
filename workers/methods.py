"""Final-stage methods, trained on the same budget and evaluated on every split.

``autoft`` retrains with the searched objective; every baseline is a registered fine-tuning method from
:mod:`workers.ft_methods` (``ft``, ``lp``, ``lp_ft``, ``l2_sp``, ``delta``, ``tpgm``, ``ftp``, ``spd``,
``wise_ft``, ...) run through the one shared training loop on the same budget.
"""

from __future__ import annotations

from typing import Any

import torch

from workers.accel import Accel
from workers.autoft import RunBudget, run_objective
from workers.ft_methods import create_method, train_with_method, wise_ft_sweep
from workers.ft_methods.base import HeadInit
from workers.model import Classifier
from workers.prepared import PreparedTask, WorkerContext, build_model, prepared_task
from workers.trainable import TrialContext
from workers.training import add_mean_ood, evaluate
from workers.trial_config import TrialConfig


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


def run_method(
    row: str,
    ctx: FinalContext,
    objective: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one results row: ``autoft`` (the searched objective) or a registered fine-tuning method.

    Return ``{"method": row, "metrics", "info", "state_dict"}`` (state dict on CPU, info JSON-safe).
    """
    accel, prepared = ctx.start()
    device = accel.device
    info: dict[str, Any] = {}
    extra: list[dict[str, Any]] = []
    if row == "autoft":
        if objective is None:
            raise ValueError("autoft needs the searched objective")
        result = run_objective(
            prepared, TrialConfig.from_flat(objective), RunBudget(ctx.steps, ctx.batch_size, ctx.metrics),
            accel=accel,
        )  # fmt: skip
        model, metrics = result.model, result.metrics
        if ctx.wise_ft_alphas:
            extra.append(_wise_ft_row(prepared, model, ctx, accel))
    else:
        method_params = dict(params or {})
        if (name or row) == "lp":
            method_params.setdefault("head_init", "lp")  # start from the task's full-batch probe head
        method = create_method(name or row, method_params)
        result = train_with_method(
            method, prepared, steps=ctx.steps, batch_size=ctx.batch_size, lr=ctx.base_lr,
            weight_decay=ctx.baseline_weight_decay, seed=ctx.seed, device=device, metrics=ctx.metrics,
            accel=accel,
        )  # fmt: skip
        model, metrics = result.model, result.metrics
        info = _json_safe(result.info)
    metrics = {k: v for k, v in metrics.items() if not k.startswith("train/")}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"method": row, "metrics": metrics, "info": info, "state_dict": state, "extra": extra}


def _wise_ft_row(
    prepared: PreparedTask, model: Classifier, ctx: FinalContext, accel: Accel
) -> dict[str, Any]:
    """WiSE-FT on the AutoFT model: interpolate from its starting point (pretrained backbone + LP head),
    choose α on OOD val, evaluate the chosen model on every split."""
    data, device = prepared.data, accel.device
    theta0 = build_model(prepared, "lp", 0, device, accel=accel).state_dict()
    split, _, name = ctx.select_metric.partition("/")

    def score(m: torch.nn.Module) -> dict[str, float]:
        return evaluate(m, {split: data.splits()[split]}, (name,), data.num_classes, device, accel=accel)

    sweep = wise_ft_sweep(model, theta0, model.state_dict(), ctx.wise_ft_alphas, score, ctx.select_metric)
    wise = build_model(prepared, "lp", 0, device, accel=accel)
    wise.load_state_dict(sweep.state)
    metrics = add_mean_ood(
        evaluate(wise, data.splits(), ctx.metrics, data.num_classes, device, accel=accel), ctx.metrics
    )
    info = {"wise_ft/alpha": sweep.alpha, "wise_ft/curve": sweep.curve}
    state = {k: v.detach().cpu() for k, v in wise.state_dict().items()}
    return {"method": "autoft_wise_ft", "metrics": metrics, "info": info, "state_dict": state, "extra": []}


def _json_safe(obj: Any) -> Any:
    """Keep what JSON can carry (numbers, strings, lists, dicts); drop objects such as optimizers."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items() if _json_safe(v) is not _DROP}
    if isinstance(obj, (list, tuple)):
        return [x for x in (_json_safe(v) for v in obj) if x is not _DROP]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return float(obj)
    return _DROP


_DROP = object()


def model_from_state(
    ctx: FinalContext, state_dict: dict[str, torch.Tensor]
) -> tuple[Classifier, torch.Tensor]:
    """Rebuild a trained classifier on CPU from :func:`run_method`'s state dict, with an example input."""
    prepared = prepared_task(ctx.task_name, ctx.task_params, ctx.cache_dir, data_roots=ctx.data_roots)
    model = build_model(prepared, "lp", 0, torch.device("cpu"))
    model.load_state_dict(state_dict)
    return model.eval(), prepared.data.id_val.x[:2].clone()


def _trial_score(ctx: TrialContext, metric: str, config: TrialConfig, head: HeadInit = "lp") -> float:
    """One trial-budget fine-tune (as in the search); ``metric`` at its last evaluation."""
    accel, prepared = ctx.start()
    last: dict[str, float] = {}
    budget = RunBudget(ctx.inner_steps, ctx.batch_size, ctx.metrics)
    run_objective(
        prepared, config, budget, accel=accel, on_eval=lambda step, m: last.update(m), head=head,
        reuse_model=True, final_eval=False,
    )  # fmt: skip
    return float(last[metric])


def reevaluate(ctx: TrialContext, objective: dict[str, Any], seed: int, metric: str) -> float:
    """Rerun one trial's objective with another seed (same inner budget); return ``metric`` at the end."""
    return _trial_score(ctx, metric, TrialConfig.from_flat(objective).with_seed(seed))


def reference_ft(ctx: TrialContext, lr: float, weight_decay: float, metric: str) -> float:
    """Plain fine-tuning (cross-entropy from a fresh head) on the trial budget: the reference for the
    "ID val may drop at most X" constraint."""
    return _trial_score(ctx, metric, TrialConfig({"ce": 1.0}, lr, weight_decay, 0), head="random")
