"""The fine-tuning objective: a weighted sum of named loss terms, returned with each component."""

from __future__ import annotations

import torch
from torch import nn

from workers.loss_terms import LOSS_TERMS, LossInputs, LossTerm


def snapshot_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """An independent copy of the trainable parameters (θ0). ``clone`` so training cannot move it."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Objective:
    """``sum_k weights[k] * term_k``, keyed by term name.

    Terms with weight 0 are skipped (never evaluated). ``__call__`` returns ``{"loss": total,
    "loss/<term>": unweighted value, ...}``: the optimizer steps on ``loss``, the tracker logs the rest.
    """

    def __init__(self, weights: dict[str, float], model: nn.Module, init_params: dict[str, torch.Tensor]):
        self.weights = {k: float(w) for k, w in weights.items() if w != 0.0}
        self.terms: dict[str, LossTerm] = {k: LOSS_TERMS.get(k)() for k in self.weights}
        self.model = model
        self.init_params = init_params
        self.num_params = sum(p.numel() for p in init_params.values())
        for name in self.init_params:
            if self.init_params[name].data_ptr() == dict(model.named_parameters())[name].data_ptr():
                raise ValueError(f"init_params[{name!r}] shares storage with the live parameter")

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        params = {n: p for n, p in self.model.named_parameters() if n in self.init_params}
        inputs = LossInputs(logits, targets, params, self.init_params, self.num_params)
        out: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        for name, term in self.terms.items():
            value = term(inputs)
            out[f"loss/{name}"] = value
            total = total + self.weights[name] * value
        out["loss"] = total
        return out
