"""The one owner of a trial's hyperparameters and of their flat ``/``-keyed names.

Keys: ``loss/<term>/weight``, ``optim/lr``, ``optim/weight_decay``, ``train/seed``, and when the search also
picks a fine-tuning method ``method/name`` plus ``method/<name>/<param>`` (a dotted param such as
``lr_multipliers.group0`` is one entry of a dict-valued param). The search layer writes these keys, Tune
hands them to the trainable (flat or nested), the tracker logs them; everything in between uses
:class:`TrialConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: ``method/name`` of the plain AutoFT training method: AdamW on the searched objective, no FT method.
PLAIN_ADAMW = "adamw"

LR_KEY = "optim/lr"
WEIGHT_DECAY_KEY = "optim/weight_decay"
SEED_KEY = "train/seed"
METHOD_KEY = "method/name"
#: Reported at every evaluation of a run: the L2 distance of the weights from where the run started.
DISTANCE_KEY = "train/distance"
#: A trial result key (no "/": not a metric) carrying the starting model's scores, see ``TrialContext``.
START_RESULT_KEY = "start_model"


def loss_weight_key(term: str) -> str:
    return f"loss/{term}/weight"


def method_param_key(method: str, param: str) -> str:
    return f"method/{method}/{param}"


def flatten_config(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Tune's nested config → ``{"loss/ce/weight": ..., "optim/lr": ...}`` (keys joined with "/")."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_config(v, key + "/"))
        else:
            out[key] = v
    return out


@dataclass(frozen=True)
class TrialConfig:
    """One trial's objective and training method.

    ``method`` is the ``method/name`` the search picked: ``None`` when the search does not pick methods,
    :data:`PLAIN_ADAMW` when it picked plain AdamW; either way :attr:`ft_method` is ``None``.
    """

    loss_weights: dict[str, float]
    lr: float
    weight_decay: float
    seed: int
    method: str | None = None
    method_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_flat(cls, config: Mapping[str, Any]) -> TrialConfig:
        """From flat ``/``-keyed hyperparameters or Tune's nested config; a missing key is a ``KeyError``."""
        flat = flatten_config(config)
        weights = {
            k.split("/")[1]: float(v)
            for k, v in flat.items()
            if k.startswith("loss/") and k.endswith("/weight")
        }
        name = flat.get(METHOD_KEY)
        params: dict[str, Any] = {}
        if name is not None and name != PLAIN_ADAMW:
            prefix = method_param_key(str(name), "")
            for k, v in flat.items():
                if k.startswith(prefix):
                    head, _, sub = k[len(prefix) :].partition(".")
                    if sub:
                        params.setdefault(head, {})[sub] = v
                    else:
                        params[head] = v
        return cls(
            loss_weights=weights,
            lr=float(flat[LR_KEY]),
            weight_decay=float(flat[WEIGHT_DECAY_KEY]),
            seed=int(flat[SEED_KEY]),
            method=None if name is None else str(name),
            method_params=params,
        )

    def to_flat(self) -> dict[str, Any]:
        """The flat ``/``-keyed form (inverse of :meth:`from_flat`)."""
        out: dict[str, Any] = {loss_weight_key(t): float(w) for t, w in self.loss_weights.items()}
        out[LR_KEY] = self.lr
        out[WEIGHT_DECAY_KEY] = self.weight_decay
        out[SEED_KEY] = self.seed
        if self.method is not None:
            out[METHOD_KEY] = self.method
            for p, v in self.method_params.items():
                if isinstance(v, Mapping):
                    out.update({method_param_key(self.method, f"{p}.{s}"): x for s, x in v.items()})
                else:
                    out[method_param_key(self.method, p)] = v
        return out

    @property
    def ft_method(self) -> str | None:
        """The registered fine-tuning method to run, or ``None`` for plain AdamW."""
        return None if self.method in (None, PLAIN_ADAMW) else self.method

    def with_seed(self, seed: int) -> TrialConfig:
        return replace(self, seed=seed)
