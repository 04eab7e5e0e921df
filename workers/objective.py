"""The fine-tuning objective: a weighted sum of named loss terms, returned with each component."""

from __future__ import annotations

import torch
from torch import nn

from workers.loss_terms import LOSS_TERMS, LossInputs, LossTerm, TextTower


def snapshot_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """An independent copy of the trainable parameters (θ0). ``clone`` so training cannot move it."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Objective:
    """``sum_k weights[k] * term_k``, keyed by term name.

    Terms with weight 0 are skipped (never evaluated). ``__call__`` returns ``{"loss": total,
    "loss/<term>": unweighted value, ...}``: the optimizer steps on ``loss``, the tracker logs the rest.
    """

    def __init__(
        self,
        weights: dict[str, float],
        model: nn.Module,
        init_params: dict[str, torch.Tensor],
        text: TextTower | None = None,
    ):
        self.weights = {k: float(w) for k, w in weights.items() if w != 0.0}
        self.terms: dict[str, LossTerm] = {k: LOSS_TERMS.get(k)() for k in self.weights}
        for name, term in self.terms.items():
            if term.needs_text_tower and text is None:
                raise ValueError(f"loss term {name!r} needs a dual-encoder model with a text tower")
        self.text = text
        self.model = model
        self.init_params = init_params
        self.num_params = sum(p.numel() for p in init_params.values())
        for name in self.init_params:
            if self.init_params[name].data_ptr() == dict(model.named_parameters())[name].data_ptr():
                raise ValueError(f"init_params[{name!r}] shares storage with the live parameter")

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor, features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        params: dict[str, torch.Tensor] = {
            n: p for n, p in self.model.named_parameters() if n in self.init_params
        }
        inputs = LossInputs(logits, targets, params, self.init_params, self.num_params, features, self.text)
        out: dict[str, torch.Tensor] = {}
        total = logits.new_zeros(())
        for name, term in self.terms.items():
            value = term(inputs)
            out[f"loss/{name}"] = value
            total = total + self.weights[name] * value
        out["loss"] = total
        return out


def text_tower(model: nn.Module, class_tokens: torch.Tensor | None) -> TextTower | None:
    """The live model's text side (``model.backbone.encode_text`` / ``logit_scale``) with the task's class
    captions, or ``None`` when the model is not a dual encoder."""
    backbone = getattr(model, "backbone", None)
    encode = getattr(backbone, "encode_text", None)
    scale = getattr(backbone, "logit_scale", None)
    if class_tokens is None or not callable(encode) or not isinstance(scale, torch.Tensor):
        return None
    device = next(model.parameters()).device
    return TextTower(encode, class_tokens.to(device), scale)


def needs_text_tower(weights: dict[str, float]) -> bool:
    return any(w != 0.0 and LOSS_TERMS.get(k).needs_text_tower for k, w in weights.items())


def text_tower_names(model: nn.Module) -> list[str]:
    """Names of the text tower's parameters (``model.backbone.text_parameters()``), in model order; empty
    when the model is not a dual encoder. FLYP-style terms and methods train them too."""
    params = getattr(getattr(model, "backbone", None), "text_parameters", None)
    if not callable(params):
        return []
    ids = {id(p) for p in params()}
    return [n for n, p in model.named_parameters() if id(p) in ids]
