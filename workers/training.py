"""Seeding, data order, evaluation and linear probing (the training loop is :mod:`workers.ft_methods.train`). Device and seed are always passed in explicitly."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.accel import Accel
from workers.metrics import compute_metrics
from workers.tasks.base import Split

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
