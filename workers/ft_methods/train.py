"""The one training loop every fine-tuning method runs through (methods customise it via hooks only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from workers.accel import Accel, TrainMeter, train_batches
from workers.ft_methods.base import HEAD_PREFIX, FTMethod, RunContext, StepBatch, describe_optimizer
from workers.model import Classifier
from workers.objective import Objective, needs_text_tower, text_tower, text_tower_names
from workers.prepared import PreparedTask, build_model
from workers.training import EvalCallback, batch_indices, evaluate_task, seed_everything
from workers.trial_config import DISTANCE_KEY


class MethodResult(NamedTuple):
    """A trained model, its metrics on every split (plus the last ``train/*`` means) and the method's info."""

    model: Classifier
    metrics: dict[str, float]
    info: dict[str, Any]


def train_with_method(
    method: FTMethod,
    prepared: PreparedTask,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    device: torch.device,
    metrics: Sequence[str] = ("accuracy",),
    loss_weights: Mapping[str, float] | None = None,
    eval_every: int = 0,
    eval_splits: Sequence[str] = ("id_val", "ood_val"),
    on_eval: EvalCallback | None = None,
    accel: Accel | None = None,
    reuse_model: bool = False,
    final_eval: bool = True,
) -> MethodResult:
    """Fine-tune a fresh copy of the task's pretrained model with ``method`` for ``steps`` AdamW-style steps.

    The base objective is ``loss_weights`` (default: the method's, usually ``{"ce": 1.0}``; AutoFT passes
    its searched weights) plus the method's extra terms. Every ``eval_every`` steps and at the last step,
    ``on_eval(step, metrics)`` receives the evaluation on ``eval_splits``, the mean loss components since the
    previous evaluation (``train/loss``, ``train/loss/<term>``) and ``optim/lr``. After the method's
    ``finalize`` the model is evaluated on every split (``id_val``, ``ood_val``, ``id_test``,
    ``ood_test/<set>``, ``ood_test/mean``); ``info`` holds the method name, its resolved params, the
    optimizer as built and what ``finalize`` chose. ``accel`` sets precision, memory format and input
    pipeline; ``reuse_model`` trains the worker's resident model, reset in place to the pretrained weights
    (see :func:`~workers.prepared.build_model`), instead of a fresh copy. Without ``final_eval`` (a search
    trial, which only needs the ``on_eval`` reports) the evaluation on every split is skipped and
    ``metrics`` holds only the last ``train/*`` means.

    The trained parameters are :meth:`~workers.ft_methods.base.FTMethod.trainable` plus the text tower when
    a term of the objective needs it (:func:`trainable_names`); distance-to-init terms are normalised by
    their count.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = prepared.data
    method.check_compatible(data)
    metrics = tuple(metrics)
    generator = seed_everything(seed)
    model = build_model(prepared, method.head_init(), seed, device, accel=accel, reuse=reuse_model)
    ctx = RunContext(data, device, metrics, seed, steps, prepared.lp_head, accel=accel)
    try:
        method.setup(model, ctx)
        ctx.init_params = {n: p.detach().clone() for n, p in model.named_parameters()}
        ctx.initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        weights = dict(method.default_loss_weights() if loss_weights is None else loss_weights)
        named = _freeze_all_but(model, trainable_names(method, model, weights))
        anchors = {n: ctx.init_params[n] for n in named}
        objective = Objective(weights, model, anchors, text=text_tower(model, data.class_text_tokens))
        optimizer = method.make_optimizer(named, lr=lr, weight_decay=weight_decay, init_params=anchors)
        term_weights = method.loss_weights()
        last = _loop(model, method, objective, optimizer, term_weights, ctx, generator, steps, batch_size,
                     eval_every, eval_splits, on_eval)  # fmt: skip
        model, info = method.finalize(model, ctx)
    finally:
        method.teardown(model)
    model.eval()
    results: dict[str, float] = {}
    if final_eval:
        results = evaluate_task(model, data, None, metrics, device, accel=accel)
    results.update({k: v for k, v in last.items() if k.startswith("train/")})
    info = {
        "method": method.name,
        "params": method.params.model_dump(mode="json"),
        "optimizer": describe_optimizer(optimizer),
        **info,
    }
    return MethodResult(model, results, info)


def trainable_names(method: FTMethod, model: Classifier, loss_weights: Mapping[str, float]) -> set[str]:
    """The parameters one run trains: the method's choice, plus the text tower when a loss term needs it."""
    names = set(method.trainable(model))
    if needs_text_tower(dict(loss_weights)):
        names |= set(text_tower_names(model))
    return names


def _freeze_all_but(model: Classifier, names: set[str]) -> dict[str, torch.nn.Parameter]:
    """Set ``requires_grad`` from ``names``; return the trainable parameters by name, in model order."""
    all_names = {n for n, _ in model.named_parameters()}
    if unknown := names - all_names:
        raise ValueError(f"trainable() named unknown parameters: {sorted(unknown)}")
    if not names:
        raise ValueError("trainable() returned no parameters")
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _loop(
    model: Classifier,
    method: FTMethod,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    term_weights: dict[str, float],
    ctx: RunContext,
    generator: torch.Generator,
    steps: int,
    batch_size: int,
    eval_every: int,
    eval_splits: Sequence[str],
    on_eval: EvalCallback | None,
) -> dict[str, float]:
    data, accel = ctx.data, ctx.accel_or_default()
    _train_mode(model)
    batches = train_batches(data.id_train, batch_indices(len(data.id_train), batch_size, generator), accel)
    meter = TrainMeter(accel, min(batch_size, len(data.id_train)))
    last: dict[str, float] = {}
    for step in range(1, steps + 1):
        x, y = next(batches)
        with accel.autocast():
            features = model.features(x)
            logits = model.head(features)
            extras = method.extra_losses(model, StepBatch(x, y, features, logits), ctx)
        losses = objective(logits.float(), y, features=features)
        extras = {k: v.float() for k, v in extras.items()}
        total = losses["loss"]
        for key, value in extras.items():
            if key not in term_weights:
                raise ValueError(f"{method.name}: extra loss {key!r} has no weight in loss_weights()")
            if f"loss/{key}" in losses:
                raise ValueError(f"{method.name}: extra loss {key!r} clashes with an objective term")
            losses[f"loss/{key}"] = value
            if term_weights[key] != 0.0:
                total = total + term_weights[key] * value
        losses["loss"] = total
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        method.after_step(model, step, ctx)
        meter.add(losses)
        if (eval_every and step % eval_every == 0) or step == steps:
            last = meter.flush()
            last["optim/lr"] = float(optimizer.param_groups[0]["lr"])
            last[DISTANCE_KEY] = distance_from(model, ctx.init_params)
            last.update(ctx.evaluate(model, eval_splits))
            _train_mode(model)  # evaluation restores plain train mode on every submodule
            if on_eval is not None:
                on_eval(step, last)
            meter.restart()
    return last


@torch.no_grad()
def distance_from(model: torch.nn.Module, start: Mapping[str, torch.Tensor]) -> float:
    """The L2 distance ``||θ - θ0||`` over every parameter that ``start`` holds (the selection rule's
    "closest to the pretrained weights")."""
    total = 0.0
    for n, p in model.named_parameters():
        if n in start:
            total += float((p.detach().float() - start[n].float()).pow(2).sum())
    return total**0.5


def _train_mode(model: Classifier) -> None:
    """Train mode, except that a fully frozen backbone runs as at inference (no dropout, fixed norm stats)."""
    model.train()
    if not any(p.requires_grad for n, p in model.named_parameters() if not n.startswith(HEAD_PREFIX)):
        model.backbone.eval()
