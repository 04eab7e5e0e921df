"""Shared helper for the weight-space terms (distance to θ0 or to zero, L1 or L2, mean over parameters)."""

from __future__ import annotations

import torch

from workers.loss_terms.base import LossInputs


def mean_weight_norm(inputs: LossInputs, *, p: int, to_init: bool) -> torch.Tensor:
    """sum_i |θ_i − a_i|^p / N over every live parameter, with a = θ0 (to_init) or 0."""
    total = None
    for name, w in inputs.params.items():
        d = w - inputs.init_params[name] if to_init else w
        s = d.abs().sum() if p == 1 else d.pow(2).sum()
        total = s if total is None else total + s
    if total is None:
        raise ValueError("weight-space loss term needs at least one parameter")
    return total / inputs.num_params
