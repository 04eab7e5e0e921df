"""Final-stage methods, trained on the same budget and evaluated on every split.

``autoft`` retrains with the searched objective; the baselines are ``ft`` (cross-entropy from a fresh
random head), ``lp`` (linear probe on frozen features) and ``lp_ft`` (Kumar et al. 2022: linear probe,
then full fine-tuning from that head).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from workers.model import Classifier
from workers.trainable import TrialContext, device_for, prepared_task, run_objective, split_config
from workers.training import add_mean_ood, evaluate, linear_probe

METHODS = ("autoft", "ft", "lp", "lp_ft")


class FinalContext(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task_name: str
    task_params: dict[str, Any]
    cache_dir: str
    steps: int
    batch_size: int
    metrics: tuple[str, ...]
    base_lr: float
    baseline_weight_decay: float = 0.1
    seed: int = 0
    use_gpu: bool = False
    cpu_threads: int = 1


def run_method(method: str, ctx: FinalContext, objective: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one method; return ``{"method", "metrics", "state_dict"}`` (state dict on CPU)."""
    torch.set_num_threads(max(1, ctx.cpu_threads))
    prepared = prepared_task(ctx.task_name, ctx.task_params, ctx.cache_dir)
    data = prepared.data
    device = device_for(ctx.use_gpu)
    common = dict(
        steps=ctx.steps, batch_size=ctx.batch_size, eval_every=0, metrics=ctx.metrics, device=device
    )
    if method == "autoft":
        if objective is None:
            raise ValueError("autoft needs the searched objective")
        weights, lr, wd, seed = split_config(objective)
        model = run_objective(prepared, weights, lr, wd, seed, **common)  # type: ignore[arg-type]
    elif method in ("ft", "lp_ft"):
        head = "random" if method == "ft" else "lp"
        model = run_objective(
            prepared,
            {"ce": 1.0},
            ctx.base_lr,
            ctx.baseline_weight_decay,
            ctx.seed,
            head=head,
            **common,  # type: ignore[arg-type]
        )
    elif method == "lp":
        head = linear_probe(
            data.backbone, data.id_train, data.feature_dim, data.num_classes, steps=ctx.steps, seed=ctx.seed,
            device=device,
        )  # fmt: skip
        model = Classifier(data.backbone, head).to(device)
    else:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    metrics = add_mean_ood(evaluate(model, data.splits(), ctx.metrics, data.num_classes, device), ctx.metrics)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"method": method, "metrics": metrics, "state_dict": state}


def model_from_state(
    ctx: FinalContext, state_dict: dict[str, torch.Tensor]
) -> tuple[Classifier, torch.Tensor]:
    """Rebuild a trained classifier on CPU from :func:`run_method`'s state dict, with an example input."""
    prepared = prepared_task(ctx.task_name, ctx.task_params, ctx.cache_dir)
    from workers.trainable import build_model

    model = build_model(prepared, "lp", 0, torch.device("cpu"))
    model.load_state_dict(state_dict)
    return model.eval(), prepared.data.id_val.x[:2].clone()


def reevaluate(ctx: TrialContext, objective: dict[str, Any], seed: int, metric: str) -> float:
    """Rerun one trial's objective with another seed (same inner budget); return ``metric`` at the end."""
    torch.set_num_threads(max(1, ctx.cpu_threads))
    prepared = prepared_task(ctx.task_name, ctx.task_params, ctx.cache_dir)
    weights, lr, wd, _ = split_config(objective)
    last: dict[str, float] = {}
    run_objective(
        prepared, weights, lr, wd, seed,
        steps=ctx.inner_steps, batch_size=ctx.batch_size, eval_every=0, metrics=ctx.metrics,
        device=device_for(ctx.use_gpu), on_eval=lambda step, m: last.update(m),
    )  # fmt: skip
    return float(last[metric])


def reference_ft(ctx: TrialContext, lr: float, weight_decay: float, metric: str) -> float:
    """Plain fine-tuning (cross-entropy from a fresh head) on the trial budget: the reference for the
    "ID val may drop at most X" constraint."""
    torch.set_num_threads(max(1, ctx.cpu_threads))
    prepared = prepared_task(ctx.task_name, ctx.task_params, ctx.cache_dir)
    last: dict[str, float] = {}
    run_objective(
        prepared, {"ce": 1.0}, lr, weight_decay, 0, head="random",
        steps=ctx.inner_steps, batch_size=ctx.batch_size, eval_every=0, metrics=ctx.metrics,
        device=device_for(ctx.use_gpu), on_eval=lambda step, m: last.update(m),
    )  # fmt: skip
    return float(last[metric])
