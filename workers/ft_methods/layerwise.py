"""``layerwise``: per-layer-group learning rates and distance-to-θ0 penalties, the layer-group search space.

AutoFT's ``--layerwise_opt`` / ``--layerwise_loss`` (robust_ft.md §1.3) search a separate LR, weight decay and
distance penalty per block. Here the backbone is cut into ``n_groups`` contiguous groups (:func:`layer_groups`,
on module boundaries, in parameter order, so a weight and its bias stay together) plus a ``head`` group. Each
group g trains at ``lr · lr_multipliers[g]`` (default 1) and adds λ_g·mean_{θ∈g}((θ − θ0)²) to the loss, with
λ_g = ``l2_weights[g]`` (default 0; logged as ``loss/layerwise/l2/<g>``). :meth:`Layerwise.search_space`
declares one multiplier and one weight per group, so a searcher can tune them like any other parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import nn

from workers.ft_methods.base import (
    HEAD_PREFIX,
    FTMethod,
    HeadParams,
    RunContext,
    SearchRange,
    StepBatch,
    register_ft_method,
)
from workers.model import Classifier

HEAD_GROUP = "head"


def group_names(n_groups: int) -> list[str]:
    """``group0 … group{n-1}`` (backbone, input side first) and ``head``."""
    return [f"group{i}" for i in range(n_groups)] + [HEAD_GROUP]


def layer_groups(model: nn.Module, n_groups: int) -> dict[str, list[str]]:
    """Every parameter name in exactly one group: ``n_groups`` contiguous backbone groups, then ``head``.

    Backbone parameters are cut on module boundaries (the module owning each parameter) into ``n_groups``
    runs of consecutive modules whose sizes differ by at most one module. Raises ``ValueError`` when the
    backbone has fewer modules with parameters than ``n_groups``.
    """
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}")
    names = [n for n, _ in model.named_parameters()]
    units: list[list[str]] = []
    for n in names:
        if n.startswith(HEAD_PREFIX):
            continue
        owner = n.rsplit(".", 1)[0] if "." in n else ""
        if units and (units[-1][0].rsplit(".", 1)[0] if "." in units[-1][0] else "") == owner:
            units[-1].append(n)
        else:
            units.append([n])
    if len(units) < n_groups:
        raise ValueError(f"n_groups={n_groups} exceeds the backbone's {len(units)} modules with parameters")
    base, extra = divmod(len(units), n_groups)
    groups: dict[str, list[str]] = {}
    start = 0
    for i in range(n_groups):
        size = base + (1 if i < extra else 0)
        groups[f"group{i}"] = [n for unit in units[start : start + size] for n in unit]
        start += size
    groups[HEAD_GROUP] = [n for n in names if n.startswith(HEAD_PREFIX)]
    return groups


def param_groups_with_multipliers(
    model: nn.Module | Mapping[str, nn.Parameter],
    groups: Mapping[str, list[str]],
    lr: float,
    lr_multipliers: Mapping[str, float],
    weight_decay: float | Mapping[str, float],
) -> list[dict[str, Any]]:
    """Optimizer param groups ``{"name", "params", "lr": lr·multiplier, "weight_decay"}`` per layer group.

    Only parameters with ``requires_grad`` are included; groups left empty are dropped. A multiplier or weight
    decay missing for a group defaults to 1 / 0; a key that names no group raises ``ValueError``.
    """
    named = dict(model.named_parameters()) if isinstance(model, nn.Module) else dict(model)
    wd = weight_decay if isinstance(weight_decay, Mapping) else {}
    for what, table in (("lr_multipliers", lr_multipliers), ("weight_decay", wd)):
        if unknown := set(table) - set(groups):
            raise ValueError(f"{what} names unknown groups {sorted(unknown)}; groups: {list(groups)}")
    out: list[dict[str, Any]] = []
    for g, members in groups.items():
        params = [named[n] for n in members if n in named and named[n].requires_grad]
        if not params:
            continue
        decay = float(wd.get(g, 0.0)) if isinstance(weight_decay, Mapping) else float(weight_decay)
        out.append(
            {"name": g, "params": params, "lr": lr * float(lr_multipliers.get(g, 1.0)), "weight_decay": decay}
        )
    return out


def group_distance_terms(
    named_params: Mapping[str, torch.Tensor],
    init_params: Mapping[str, torch.Tensor],
    groups: Mapping[str, list[str]],
    only: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """mean((θ − θ0)²) over every scalar of each group (``only``: just these groups; empty groups skipped)."""
    out: dict[str, torch.Tensor] = {}
    for g, members in groups.items():
        present = [n for n in members if n in named_params]
        if (only is not None and g not in only) or not present:
            continue
        total = torch.stack([(named_params[n] - init_params[n]).pow(2).sum() for n in present]).sum()
        out[g] = total / sum(named_params[n].numel() for n in present)
    return out


def group_distance_penalty(
    named_params: Mapping[str, torch.Tensor],
    init_params: Mapping[str, torch.Tensor],
    groups: Mapping[str, list[str]],
    weights: Mapping[str, float],
) -> torch.Tensor:
    """Σ_g λ_g·mean_{θ∈g}((θ − θ0)²) over the groups with a non-zero weight."""
    active = {g for g, w in weights.items() if w != 0.0}
    terms = group_distance_terms(named_params, init_params, groups, only=active)
    ref = next(iter(named_params.values()))
    return sum((weights[g] * v for g, v in terms.items()), ref.new_zeros(()))


class LayerwiseParams(HeadParams):
    n_groups: int = Field(default=4, ge=1, le=64, description="Contiguous backbone groups (plus the head).")
    lr_multipliers: dict[str, float] = Field(default_factory=dict, description="Group → LR multiplier.")
    l2_weights: dict[str, float] = Field(default_factory=dict, description="Group → λ_g of mean (θ − θ0)².")

    @model_validator(mode="after")
    def _known_groups(self) -> LayerwiseParams:
        valid = group_names(self.n_groups)
        for what, table in (("lr_multipliers", self.lr_multipliers), ("l2_weights", self.l2_weights)):
            if unknown := sorted(set(table) - set(valid)):
                raise ValueError(f"{what}: unknown groups {unknown}; valid: {', '.join(valid)}")
        if any(not 0.0 < v <= 1e4 for v in self.lr_multipliers.values()):
            raise ValueError("lr_multipliers must be in (0, 1e4]")
        if any(not 0.0 <= v <= 1e4 for v in self.l2_weights.values()):
            raise ValueError("l2_weights must be in [0, 1e4]")
        return self


@register_ft_method("layerwise")
class Layerwise(FTMethod):
    summary = "Per-layer-group LR multipliers and distance-to-θ0 penalties (AutoFT's layerwise search space)."
    paper = (
        "Choi, Lee, Chen, Zhou, Raghunathan, Finn. AutoFT: Learning an Objective for Robust Fine-Tuning "
        "(layerwise variant). 2024. https://arxiv.org/abs/2401.10220"
    )
    Params = LayerwiseParams
    params: LayerwiseParams

    def setup(self, model: Classifier, ctx: RunContext) -> None:
        self._groups = layer_groups(model, self.params.n_groups)

    def make_optimizer(
        self,
        named_params: dict[str, nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        groups = param_groups_with_multipliers(
            named_params, self._groups, lr, self.params.lr_multipliers, weight_decay
        )
        return torch.optim.AdamW(groups, lr=lr)

    def extra_losses(self, model: Classifier, batch: StepBatch, ctx: RunContext) -> dict[str, torch.Tensor]:
        live = {n: p for n, p in model.named_parameters() if p.requires_grad}
        active = {g for g, w in self.params.l2_weights.items() if w != 0.0}
        terms = group_distance_terms(live, ctx.init_params, self._groups, only=active)
        return {f"layerwise/l2/{g}": v for g, v in terms.items()}

    def loss_weights(self) -> dict[str, float]:
        return {f"layerwise/l2/{g}": w for g, w in self.params.l2_weights.items() if w != 0.0}

    def search_space(self) -> dict[str, SearchRange]:
        space = super().search_space()
        for g in group_names(self.params.n_groups):
            space[f"lr_multipliers.{g}"] = SearchRange(0.01, 100.0, log=True)
            space[f"l2_weights.{g}"] = SearchRange(1e-4, 10.0, log=True)
        return space
