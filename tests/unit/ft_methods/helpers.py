"""Shared helpers for the fine-tuning-method tests."""

from __future__ import annotations

from typing import Any

import torch

from workers.ft_methods import FTMethod, MethodResult, train_with_method
from workers.prepared import PreparedTask

CPU = torch.device("cpu")


def run(method: FTMethod, prepared: PreparedTask, **overrides: Any) -> MethodResult:
    """A short, seeded run on CPU; keyword overrides replace the defaults."""
    kw: dict[str, Any] = dict(
        steps=3, batch_size=16, lr=1e-3, weight_decay=0.1, seed=0, device=CPU, metrics=("accuracy",)
    )
    kw.update(overrides)
    return train_with_method(method, prepared, **kw)
