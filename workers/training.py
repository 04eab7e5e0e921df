"""The training loop, evaluation and linear probing. Device and seed are always passed in explicitly."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.accel import Accel, TrainMeter, train_batches
from workers.metrics import compute_metrics
from workers.model import Classifier
from workers.objective import Objective
from workers.tasks.base import Split, TaskData

EvalCallback = Callable[[int, dict[str, float]], None]


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def batch_indices(n: int, batch_size: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled epochs over ``range(n)``; the last short batch of an epoch is dropped if n > bs."""
    bs = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - bs + 1, bs):
            yield perm[i : i + bs]


@torch.no_grad()
def predict(
    model: nn.Module,
    split: Split,
    device: torch.device,
    batch_size: int = 1024,
    accel: Accel | None = None,
) -> torch.Tensor:
    accel = accel or Accel(device)
    was_training = model.training
    model.eval()
    preds = []
    with accel.autocast():
        for i in range(0, len(split), batch_size):
            preds.append(model(accel.inputs(split.x[i : i + batch_size])).argmax(dim=1).cpu())
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def evaluate(
    model: nn.Module,
    splits: dict[str, Split],
    metrics: Sequence[str],
    num_classes: int,
    device: torch.device,
    accel: Accel | None = None,
) -> dict[str, float]:
    """``{"<split>/<metric>": value}`` for every split and metric."""
    out: dict[str, float] = {}
    for prefix, split in splits.items():
        pred = predict(model, split, device, accel=accel)
        for name, value in compute_metrics(list(metrics), pred, split.y, split.groups, num_classes).items():
            out[f"{prefix}/{name}"] = value
    return out


def add_mean_ood(results: dict[str, float], metrics: Sequence[str]) -> dict[str, float]:
    """Add ``ood_test/mean/<metric>``: the unweighted mean over the OOD test sets."""
    for m in metrics:
        vals = [
            v
            for k, v in results.items()
            if k.startswith("ood_test/") and k.endswith(f"/{m}") and not k.startswith("ood_test/mean/")
        ]
        if vals:
            results[f"ood_test/mean/{m}"] = sum(vals) / len(vals)
    return results


@torch.no_grad()
def extract_features(
    backbone: nn.Module, x: torch.Tensor, device: torch.device, bs: int = 256
) -> torch.Tensor:
    """Frozen features of ``x``, in batches of ``bs``."""
    backbone.eval()
    return torch.cat([backbone(x[i : i + bs].to(device)) for i in range(0, len(x), bs)])


def linear_probe(
    backbone: nn.Module,
    train: Split,
    feature_dim: int,
    num_classes: int,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
    device: torch.device,
    features: torch.Tensor | None = None,
) -> nn.Linear:
    """Fit a linear head on frozen features (full batch AdamW on cross-entropy); the backbone is untouched.

    ``features`` (the backbone's features of ``train.x``, e.g. from a cache) skips the extraction."""
    g = torch.Generator().manual_seed(seed)
    feats = (features if features is not None else extract_features(backbone, train.x, device)).to(device)
    y = train.y.to(device)
    head = nn.Linear(feature_dim, num_classes).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g).to(device) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(feats), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head


def fresh_head(feature_dim: int, num_classes: int, seed: int) -> nn.Linear:
    """A randomly initialised head (PyTorch's default init) from a fixed seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Linear(feature_dim, num_classes)


@dataclass
class FitResult:
    steps: int
    last: dict[str, float]


def fine_tune(
    model: Classifier,
    data: TaskData,
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    eval_every: int = 0,
    eval_splits: Sequence[str] = ("id_val", "ood_val"),
    metrics: Sequence[str] = ("accuracy",),
    on_eval: EvalCallback | None = None,
    accel: Accel | None = None,
) -> FitResult:
    """Run ``steps`` optimizer steps of ``objective`` on ID train.

    Every ``eval_every`` steps (and at the last step) the model is evaluated on ``eval_splits`` and
    ``on_eval(step, metrics)`` is called with the evaluation, the mean training loss components since the
    previous evaluation (``train/loss``, ``train/loss/<term>``) and the optimizer's current LR (``optim/lr``).
    The LR is never touched here: the optimizer runs at the LR it was built with. ``accel`` (default: fp32
    on ``device``) sets precision, memory format and the input pipeline.
    """
    accel = accel or Accel(device)
    splits = data.splits()
    chosen = {k: splits[k] for k in eval_splits}
    model.train()
    batches = train_batches(data.id_train, batch_indices(len(data.id_train), batch_size, generator), accel)
    meter = TrainMeter(accel, min(batch_size, len(data.id_train)))
    last: dict[str, float] = {}
    for step in range(1, steps + 1):
        x, y = next(batches)
        with accel.autocast():
            features = model.features(x)
            logits = model.head(features)
        losses = objective(logits.float(), y, features=features)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        meter.add(losses)
        if (eval_every and step % eval_every == 0) or step == steps:
            last = meter.flush()
            last["optim/lr"] = float(optimizer.param_groups[0]["lr"])
            last.update(evaluate(model, chosen, metrics, data.num_classes, device, accel=accel))
            if on_eval is not None:
                on_eval(step, last)
            meter.restart()
    return FitResult(steps=steps, last=last)
