"""Loss terms, one file each, registered by name: every module of this package is imported here, so a new
term is one new file with ``@register_loss_term("name")`` on its class."""

from __future__ import annotations

from workers.loss_terms.base import LOSS_TERMS, LossInputs, LossTerm, TextTower, register_loss_term
from workers.registry import import_submodules

import_submodules(__name__)

__all__ = ["LOSS_TERMS", "LossInputs", "LossTerm", "TextTower", "register_loss_term"]
