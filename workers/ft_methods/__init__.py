"""Robust fine-tuning methods, one file each, registered by name (see :mod:`.base` for the contract): every
module of this package is imported here, so a new method is one new file with ``@register_ft_method("name")``.

``FT_METHODS`` maps a name to its class; :func:`create_method` resolves a name and validates its params;
:func:`train_with_method` runs any method through the one shared training loop.
"""

from __future__ import annotations

from workers.ft_methods.base import (
    FT_METHODS,
    FTMethod,
    MethodParams,
    RunContext,
    SearchRange,
    StepBatch,
    UnknownFTMethod,
    create_method,
    register_ft_method,
)
from workers.ft_methods.layerwise import (
    group_distance_penalty,
    layer_groups,
    param_groups_with_multipliers,
)
from workers.ft_methods.train import MethodResult, train_with_method
from workers.ft_methods.wise_ft import wise_ft_interpolate, wise_ft_sweep
from workers.loss_terms.flyp import flyp_contrastive_loss
from workers.registry import import_submodules

import_submodules(__name__)

__all__ = [
    "FT_METHODS",
    "FTMethod",
    "MethodParams",
    "MethodResult",
    "RunContext",
    "SearchRange",
    "StepBatch",
    "UnknownFTMethod",
    "create_method",
    "flyp_contrastive_loss",
    "group_distance_penalty",
    "layer_groups",
    "param_groups_with_multipliers",
    "register_ft_method",
    "train_with_method",
    "wise_ft_interpolate",
    "wise_ft_sweep",
]
