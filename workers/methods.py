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
from workers.contexts import FinalContext, TrialContext
from workers.ft_methods import create_method, train_with_method, wise_ft_sweep
from workers.ft_methods.base import HeadInit
from workers.ft_methods.train import distance_from
from workers.model import Classifier
from workers.prepared import PreparedTask, build_model, prepared_task, start_scores
from workers.training import evaluate_task
from workers.trial_config import DISTANCE_KEY, TrialConfig


def run_method(
    row: str,
    ctx: FinalContext,
    objective: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    lr: float | None = None,
    wise_ft: bool = True,
) -> dict[str, Any]:
    """Train one results row: an AutoFT objective (``objective`` given, e.g. the row ``autoft``) or a
    registered fine-tuning method at ``lr`` (default ``ctx.base_lr``).

    ``lp`` without params is the starting model itself: the pretrained backbone with the task's starting
    head (a cross-validated logistic-regression probe, or the task's own head such as CLIP's zero-shot one),
    no gradient steps. With ``wise_ft`` and ``ctx.wise_ft_alphas`` an AutoFT row also yields the row
    ``<row>_wise_ft``. Return ``{"method": row, "metrics", "info", "state_dict", "extra"}`` (state dict on
    CPU, info JSON-safe, ``extra`` the further rows).
    """
    accel, prepared = ctx.start()
    device = accel.device
    extra: list[dict[str, Any]] = []
    method_name = name or row
    if objective is not None or row == "autoft":
        if objective is None:
            raise ValueError("autoft needs the searched objective")
        config = TrialConfig.from_flat(objective)
        result = run_objective(
            prepared, config, RunBudget(ctx.steps, ctx.batch_size, ctx.metrics), accel=accel
        )
        model, metrics = result.model, result.metrics
        info: dict[str, Any] = {"optim/lr": config.lr, **prepared.head_info}
        if wise_ft and ctx.wise_ft_alphas:
            extra.append(_wise_ft_row(prepared, model, ctx, accel, f"{row}_wise_ft"))
    else:
        method_params = dict(params or {})
        start_model = method_name == "lp" and not method_params
        if method_name == "lp":
            method_params.setdefault("head_init", "lp")  # start from the task's starting head
        method = create_method(method_name, method_params)
        result = train_with_method(
            method, prepared, steps=0 if start_model else ctx.steps, batch_size=ctx.batch_size,
            lr=lr or ctx.base_lr, weight_decay=ctx.baseline_weight_decay, seed=ctx.seed, device=device,
            metrics=ctx.metrics, accel=accel,
        )  # fmt: skip
        model, metrics = result.model, result.metrics
        info = _json_safe(result.info)
        if start_model:
            info.update(prepared.head_info)
        else:
            info["optim/lr"] = float(lr or ctx.base_lr)
    distance = metrics.get(DISTANCE_KEY)
    metrics = {k: v for k, v in metrics.items() if not k.startswith("train/")}
    if distance is not None:
        info[DISTANCE_KEY] = float(distance)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"method": row, "metrics": metrics, "info": info, "state_dict": state, "extra": extra}


def _wise_ft_row(
    prepared: PreparedTask, model: Classifier, ctx: FinalContext, accel: Accel, row: str
) -> dict[str, Any]:
    """WiSE-FT on an AutoFT model: interpolate from its starting point (pretrained backbone + starting
    head, α = 0), choose α on OOD val, evaluate the chosen model on every split. Since α = 0 is on the grid,
    the chosen model is never below the starting model on the selection metric."""
    data, device = prepared.data, accel.device
    theta0 = build_model(prepared, "lp", 0, device, accel=accel).state_dict()
    split, _, name = ctx.select_metric.partition("/")

    def score(m: torch.nn.Module) -> dict[str, float]:
        return evaluate_task(m, data, [split], (name,), device, accel=accel)

    sweep = wise_ft_sweep(model, theta0, model.state_dict(), ctx.wise_ft_alphas, score, ctx.select_metric)
    wise = build_model(prepared, "lp", 0, device, accel=accel)
    wise.load_state_dict(sweep.state)
    metrics = evaluate_task(wise, data, None, ctx.metrics, device, accel=accel)
    info = {
        "wise_ft/alpha": sweep.alpha,
        "wise_ft/curve": sweep.curve,
        DISTANCE_KEY: distance_to_start(wise, theta0),
    }
    state = {k: v.detach().cpu() for k, v in wise.state_dict().items()}
    return {"method": row, "metrics": metrics, "info": info, "state_dict": state, "extra": []}


def start_metrics(ctx: FinalContext) -> dict[str, Any]:
    """:func:`~workers.prepared.start_scores` in a worker of its own (when no search trial scored it)."""
    accel, prepared = ctx.start()
    return start_scores(prepared, accel, ctx.metrics)


def distance_to_start(model: torch.nn.Module, start: dict[str, torch.Tensor]) -> float:
    """``||θ - θ0||`` over the parameters (not buffers) of ``model``."""
    params = {n for n, _ in model.named_parameters()}
    return distance_from(model, {k: v for k, v in start.items() if k in params})


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts (floating tensors; others, e.g. BatchNorm counters, from the
    first)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in states[0].items():
        if torch.is_floating_point(v):
            out[k] = torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def soup_row(
    ctx: FinalContext, ingredients: list[dict[str, Any]], row: str = "autoft_soup"
) -> dict[str, Any]:
    """A greedy soup (Wortsman et al. 2022): rank the ingredients (final-stage rows of the top trial
    objectives) by the selection metric; starting from the best, add each next one to the weight average
    while the average's selection metric does not drop. The soup is never below its first ingredient."""
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient")
    accel, prepared = ctx.start()
    data, device = prepared.data, accel.device
    split, _, name = ctx.select_metric.partition("/")
    model = build_model(prepared, "lp", 0, device, accel=accel)

    def score(state: dict[str, torch.Tensor]) -> float:
        model.load_state_dict(state)
        return evaluate_task(model, data, [split], (name,), device, accel=accel)[ctx.select_metric]

    ranked = sorted(ingredients, key=lambda o: -o["metrics"][ctx.select_metric])
    chosen = [ranked[0]]
    best = score(ranked[0]["state_dict"])
    curve = [{"added": ranked[0]["method"], ctx.select_metric: best, "kept": True}]
    for cand in ranked[1:]:
        value = score(average_states([o["state_dict"] for o in [*chosen, cand]]))
        kept = value >= best
        curve.append({"added": cand["method"], ctx.select_metric: value, "kept": kept})
        if kept:
            chosen.append(cand)
            best = value
    state = average_states([o["state_dict"] for o in chosen])
    model.load_state_dict(state)
    theta0 = build_model(prepared, "lp", 0, device, accel=accel).state_dict()
    metrics = evaluate_task(model, data, None, ctx.metrics, device, accel=accel)
    info = {
        "soup/size": float(len(chosen)),
        "soup/ingredients": [o["method"] for o in chosen],
        "soup/curve": curve,
        DISTANCE_KEY: distance_to_start(model, theta0),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"method": row, "metrics": metrics, "info": info, "state_dict": state, "extra": []}


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
    prepared = prepared_task(
        ctx.task_name, ctx.task_params, ctx.cache_dir, data_roots=ctx.data_roots, revision=ctx.revision
    )
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
