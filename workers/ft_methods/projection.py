"""Projection of weights onto a ball around the pretrained weights, shared by TPGM and FTP.

Two norms, as in the TPGM and FTP reference code (PotatoTian/TPGM ``utils/tpgm.py``, GT-RIPL/FTP
``util/FTP.py``):

- ``"l2"``: one radius per parameter tensor, ‖w − w0‖₂ ≤ γ.
- ``"mars"`` (maximum absolute row sum): per output row, ‖(w − w0)_row‖₁ ≤ γ, for every row of a ≥ 2-D tensor
  (the L1 norm over all dims but the first); each entry of a 0-/1-D tensor (biases, norm scales) is a row.
"""

from __future__ import annotations

from typing import Literal

import torch

Norm = Literal["l2", "mars"]
EPS = 1e-8


def deviation_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """‖delta‖ under ``norm``: a 0-dim tensor (l2) or one value per row, broadcastable to ``delta`` (mars)."""
    if norm == "l2":
        return torch.linalg.vector_norm(delta)
    if delta.dim() <= 1:
        return delta.abs()
    return delta.abs().sum(dim=tuple(range(1, delta.dim())), keepdim=True)


def projection_ratio(delta: torch.Tensor, radius: torch.Tensor | float, norm: Norm) -> torch.Tensor:
    """clamp(γ / (‖delta‖ + 1e-8), 0, 1): the factor that brings ``delta`` inside the ball of radius γ."""
    return (radius / (deviation_norm(delta, norm) + EPS)).clamp(0.0, 1.0)


def project_onto_ball(
    w: torch.Tensor, w0: torch.Tensor, radius: torch.Tensor | float, norm: Norm
) -> torch.Tensor:
    """w0 + min(1, γ/‖w − w0‖)·(w − w0). Rows already inside the ball are returned bit-identical."""
    delta = w - w0
    ratio = projection_ratio(delta, radius, norm)
    return torch.where(ratio < 1.0, w0 + ratio * delta, w)
