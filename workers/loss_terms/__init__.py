"""Loss terms, one file each, registered by name on import."""

from __future__ import annotations

from workers.loss_terms import ce, dcm, entropy, flyp, hinge, l1_init, l1_zero, l2_init, l2_zero  # noqa: F401
from workers.loss_terms.base import LOSS_TERMS, LossInputs, LossTerm, TextTower, register_loss_term

__all__ = ["LOSS_TERMS", "LossInputs", "LossTerm", "TextTower", "register_loss_term"]
