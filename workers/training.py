"""Seeding, data order, evaluation and linear probing (the training loop is :mod:`workers.ft_methods.train`). Device and seed are always passed in explicitly."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workers.accel import Accel
from workers.metrics import compute_metrics
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


def evaluate_task(
    model: nn.Module,
    data: TaskData,
    names: Sequence[str] | None,
    metrics: Sequence[str],
    device: torch.device,
    accel: Accel | None = None,
    *,
    bootstrap: int = 1000,
) -> dict[str, float]:
    """:func:`evaluate` on the task's splits ``names``; ``None``: every split, with ``ood_test/mean`` and
    a bootstrap 95% interval of each test accuracy (``<split>/accuracy/ci_low`` / ``ci_high``, from
    ``bootstrap`` resamples of the test examples; 0: none).

    With named OOD val sets, ``ood_val`` is scored per set (``ood_val/<set>/<metric>``) and
    ``ood_val/<metric>`` is their ``data.ood_val_aggregate``."""
    out: dict[str, float] = {}
    correct: dict[str, torch.Tensor] = {}
    for prefix, split in data.expand(names).items():
        pred = predict(model, split, device, accel=accel)
        values = compute_metrics(list(metrics), pred, split.y, split.groups, data.num_classes)
        out.update({f"{prefix}/{k}": v for k, v in values.items()})
        if names is None and (prefix == "id_test" or prefix.startswith("ood_test/")):
            correct[prefix] = pred == split.y
    if data.ood_val_sets and (names is None or "ood_val" in names):
        add_ood_val_aggregate(out, list(data.ood_val_sets), metrics, data.ood_val_aggregate)
    if names is None:
        add_mean_ood(out, metrics)
        if bootstrap > 0 and "accuracy" in metrics:
            out.update(bootstrap_accuracy(correct, bootstrap))
    return out


def bootstrap_accuracy(correct: dict[str, torch.Tensor], resamples: int, seed: int = 0) -> dict[str, float]:
    """Percentile-bootstrap 95% intervals of the accuracy of each split (``correct``: per-example hits) and
    of the mean over the ``ood_test/*`` splits (each resampled independently)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    ood: list[torch.Tensor] = []
    for prefix, hits in correct.items():
        if len(hits) == 0:
            continue
        idx = torch.randint(0, len(hits), (resamples, len(hits)), generator=g)
        accs = hits.float()[idx].mean(1)
        if prefix.startswith("ood_test/"):
            ood.append(accs)
        out.update(_interval(prefix, accs))
    if ood:
        out.update(_interval("ood_test/mean", torch.stack(ood).mean(0)))
    return out


def _interval(prefix: str, samples: torch.Tensor) -> dict[str, float]:
    lo, hi = torch.quantile(samples, torch.tensor([0.025, 0.975])).tolist()
    return {f"{prefix}/accuracy/ci_low": float(lo), f"{prefix}/accuracy/ci_high": float(hi)}


def add_ood_val_aggregate(
    results: dict[str, float], sets: Sequence[str], metrics: Sequence[str], how: str
) -> dict[str, float]:
    """Set ``ood_val/<metric>`` to the mean (``how="mean"``) or the minimum (``"worst"``) over the sets."""
    for m in metrics:
        vals = [results[f"ood_val/{s}/{m}"] for s in sets if f"ood_val/{s}/{m}" in results]
        if vals:
            results[f"ood_val/{m}"] = min(vals) if how == "worst" else sum(vals) / len(vals)
    return results


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


#: The L2 strengths (inverse, as scikit-learn's ``C``) the cross-validated probe chooses from.
DEFAULT_PROBE_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)


@dataclass(frozen=True)
class ProbeFit:
    """A linear probe and how it was chosen: ``C`` and the mean CV accuracy of every candidate C."""

    head: nn.Linear
    C: float
    cv: dict[float, float]
    folds: int

    def info(self) -> dict[str, float]:
        """What a results row reports: ``lp/C``, ``lp/cv_folds`` and the chosen C's ``lp/cv_accuracy``."""
        out = {"lp/C": self.C, "lp/cv_folds": float(self.folds)}
        if self.C in self.cv:
            out["lp/cv_accuracy"] = self.cv[self.C]
        return out


def fit_logistic(
    feats: torch.Tensor, y: torch.Tensor, num_classes: int, C: float, *, max_iter: int = 200
) -> nn.Linear:
    """Multinomial logistic regression on fixed features, as scikit-learn's ``LogisticRegression(C=C)``.

    Minimises ``mean CE + ||W||^2 / (2 C n)`` (bias unpenalised) with full-batch L-BFGS (strong Wolfe line
    search), from zero weights: deterministic, no learning rate to tune."""
    feats = feats.detach().float()
    n, d = feats.shape
    head = nn.Linear(d, num_classes).to(feats.device)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip
    penalty = 1.0 / (2.0 * C * n)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(feats), y) + penalty * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head


def stratified_folds(y: torch.Tensor, k: int, seed: int) -> list[torch.Tensor]:
    """``k`` disjoint index sets covering ``range(len(y))``, each class spread evenly (shuffled by seed)."""
    g = torch.Generator().manual_seed(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0
    for c in torch.unique(y).tolist():
        members = (y == c).nonzero().flatten()
        idx: list[int] = members[torch.randperm(len(members), generator=g)].tolist()
        for j, i in enumerate(idx):
            folds[(j + offset) % k].append(i)
        offset += len(idx)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in folds]


def linear_probe_cv(
    feats: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    Cs: Sequence[float] = DEFAULT_PROBE_CS,
    folds: int = 5,
    seed: int = 0,
) -> ProbeFit:
    """Choose C by stratified k-fold CV accuracy (ties: the smaller C, the stronger regulariser), then refit
    on all of ``feats`` (what ``LogisticRegressionCV`` does). ``k`` is capped by the smallest class."""
    counts = torch.bincount(y, minlength=num_classes)
    k = int(min(folds, counts[counts > 0].min().item()))
    Cs = sorted(float(c) for c in Cs)
    if k < 2 or len(Cs) == 1:
        C = Cs[len(Cs) // 2] if k < 2 else Cs[0]
        return ProbeFit(fit_logistic(feats, y, num_classes, C), C, {}, 0)
    split = stratified_folds(y, k, seed)
    scores: dict[float, float] = {}
    for C in Cs:
        accs = []
        for i in range(k):
            val = split[i]
            train = torch.cat([split[j] for j in range(k) if j != i])
            head = fit_logistic(feats[train], y[train], num_classes, C)
            with torch.no_grad():
                accs.append(float((head(feats[val].float()).argmax(1) == y[val]).float().mean()))
        scores[C] = sum(accs) / len(accs)
    best = max(scores.values())
    C = min(c for c, v in scores.items() if v >= best - 1e-12)
    return ProbeFit(fit_logistic(feats, y, num_classes, C), C, scores, k)


def linear_probe(
    backbone: nn.Module,
    train: Split,
    feature_dim: int,
    num_classes: int,
    *,
    Cs: Sequence[float] = DEFAULT_PROBE_CS,
    folds: int = 5,
    seed: int = 0,
    device: torch.device,
    features: torch.Tensor | None = None,
) -> ProbeFit:
    """A cross-validated logistic-regression head on frozen features (:func:`linear_probe_cv`); the backbone
    is untouched. ``features`` (the backbone's features of ``train.x``, e.g. from a cache) skips the
    extraction. The head is returned on CPU."""
    feats = (features if features is not None else extract_features(backbone, train.x, device)).cpu()
    if feats.shape[1] != feature_dim:
        raise ValueError(f"features have dimension {feats.shape[1]}, the task says {feature_dim}")
    fit = linear_probe_cv(feats.float(), train.y.cpu(), num_classes, Cs=Cs, folds=folds, seed=seed)
    return fit


def fresh_head(feature_dim: int, num_classes: int, seed: int) -> nn.Linear:
    """A randomly initialised head (PyTorch's default init) from a fixed seed."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Linear(feature_dim, num_classes)
