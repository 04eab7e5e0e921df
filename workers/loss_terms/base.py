"""The loss-term contract.

A loss term is one named component of the fine-tuning objective. The objective calls every active term with
the same :class:`LossInputs` and combines them as ``sum(weight[name] * term(inputs))``. A term returns a
0-dim tensor that is differentiable w.r.t. the logits and/or the model parameters, is finite for any finite
input, and does not modify its inputs. Terms are registered by name with ``@register_loss_term("name")``; a
conformance test runs every registered term.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from workers.errors import UnknownLossTerm
from workers.registry import Registry


@dataclass(frozen=True)
class TextTower:
    """The text side of a dual-encoder (CLIP-like) model, for contrastive terms: ``encode`` maps tokens to
    text embeddings, ``class_tokens`` holds one tokenised caption per class, ``logit_scale`` is the log of
    the inverse temperature (as in CLIP). All live: gradients flow into the text tower if it is trainable."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    class_tokens: torch.Tensor
    logit_scale: torch.Tensor


@dataclass(frozen=True)
class LossInputs:
    """Everything a term may look at for one minibatch.

    ``params`` are the live (trainable) parameters by name; ``init_params`` is an independent copy of the
    pretrained weights θ0 by the same names (never a view of ``params``); ``num_params`` is the total number
    of scalar parameters N used to normalise the weight-space terms. ``features`` (the backbone's output for
    the batch) and ``text`` are given where the model has them; terms that need them say so
    (``needs_text_tower``).
    """

    logits: torch.Tensor
    targets: torch.Tensor
    params: dict[str, torch.Tensor]
    init_params: dict[str, torch.Tensor]
    num_params: int
    features: torch.Tensor | None = None
    text: TextTower | None = None


class LossTerm(ABC):
    """One component of the objective. Subclasses set ``name`` (via the decorator) and ``summary``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: "logits": depends on the predictions; "weights": on the parameters only; "contrastive": on the
    #: image features and the text tower.
    kind: ClassVar[str] = "logits"
    #: Only usable with a dual-encoder model (``LossInputs.features`` and ``LossInputs.text`` given).
    needs_text_tower: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        """Return this term's value as a 0-dim tensor."""


LOSS_TERMS: Registry[type[LossTerm]] = Registry("loss term", UnknownLossTerm)


#: Class decorator registering a :class:`LossTerm` under ``name`` (:meth:`Registry.register`).
register_loss_term = LOSS_TERMS.register


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-example entropy of softmax(logits), in nats."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)
