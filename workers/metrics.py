"""Evaluation metrics, registered by name. Each maps (predictions, targets, groups) to a float in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch

from workers.errors import UnknownMetric
from workers.registry import Registry

MetricFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", int], float]
METRICS: Registry[MetricFn] = Registry("metric", UnknownMetric)


@METRICS.register("accuracy")
def accuracy(pred: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None, num_classes: int) -> float:
    """Fraction of correct predictions."""
    return float((pred == y).float().mean()) if len(y) else 0.0


@METRICS.register("macro_f1")
def macro_f1(pred: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in the labels or the predictions."""
    f1s = []
    for c in range(num_classes):
        tp = int(((pred == c) & (y == c)).sum())
        fp = int(((pred == c) & (y != c)).sum())
        fn = int(((pred != c) & (y == c)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


@METRICS.register("worst_group_accuracy")
def worst_group_accuracy(
    pred: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None, num_classes: int
) -> float:
    """Lowest accuracy over groups; the groups are the classes when the split has no group labels."""
    g = y if groups is None else groups
    accs = [float((pred[g == k] == y[g == k]).float().mean()) for k in torch.unique(g)]
    return min(accs) if accs else 0.0


def compute_metrics(
    names: list[str], pred: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None, num_classes: int
) -> dict[str, float]:
    return {n: METRICS.get(n)(pred, y, groups, num_classes) for n in names}
