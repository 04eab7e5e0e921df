from __future__ import annotations

import pytest
import torch

from autoft_service.errors import UnknownMetric
from workers.metrics import METRICS, compute_metrics


def test_metric_values() -> None:
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    y = torch.tensor([0, 1, 1, 1, 2, 0])
    m = compute_metrics(["accuracy", "macro_f1", "worst_group_accuracy"], pred, y, None, 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class F1: c0 tp1 fp1 fn1 → .5; c1 tp2 fp0 fn1 → .8; c2 tp1 fp1 fn0 → 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["worst_group_accuracy"] == pytest.approx(0.5)  # class 0: 1 of 2


def test_worst_group_uses_group_labels() -> None:
    pred = torch.tensor([0, 0, 1, 1])
    y = torch.tensor([0, 0, 1, 0])
    groups = torch.tensor([0, 0, 1, 1])
    assert METRICS.get("worst_group_accuracy")(pred, y, groups, 2) == pytest.approx(0.5)


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name: str) -> None:
    y = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(1))
    assert METRICS.get(name)(y.clone(), y, None, 4) == pytest.approx(1.0)
    assert 0.0 <= METRICS.get(name)((y + 1) % 4, y, None, 4) <= 0.0 + 1e-9


def test_unknown_metric() -> None:
    with pytest.raises(UnknownMetric):
        METRICS.get("auc")
