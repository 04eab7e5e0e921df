"""The fine-tuning-method contract: one class per method, registered by name, run by ONE training loop.

A method customises :func:`workers.ft_methods.train.train_with_method` only through the hooks below, called
in this order for one run:

1. ``check_compatible(data)``: refuse a task the method cannot run on (raises ``InvalidSpec``).
2. ``head_init()``: start from the task's linear-probe head (``"lp"``) or a seeded random one (``"random"``).
3. ``setup(model, ctx)``: one-time work before θ0 is recorded (forward hooks, a frozen teacher, attention
   weights, a zero-shot head). It may change the model's weights; θ0 is the model *after* ``setup``.
4. ``trainable(model)``: names of the parameters to train (the loop adds the text tower when a loss term
   needs it); every other parameter is frozen.
5. ``make_optimizer(named_params, lr=, weight_decay=, init_params=)``: the optimizer over the trainable
   parameters (``init_params`` holds θ0 for exactly those names).
6. Every step: ``extra_losses(model, batch, ctx)`` (unweighted, by term name) is added to the base objective
   with the weights from ``loss_weights()``; backward; ``optimizer.step()``; ``after_step(model, step, ctx)``.
7. ``finalize(model, ctx)``: post-hoc work (a WiSE-FT α sweep, a TPGM projection); returns the final model
   and an ``info`` dict of what was chosen.
8. ``teardown(model)``: always called, also after an error (remove forward hooks, drop teachers).

Ownership: the loop owns the model, the data order, the seed, the device and the evaluation; a method owns
its own state (hooks, radii, teachers) for one run at a time and must reset it in ``setup``. The model and
``ctx.lp_head`` belong to the caller: a method never modifies ``ctx.lp_head`` or the task's backbone.

Hyperparameters live in a strict pydantic ``Params`` model (unknown keys are errors). Fields declared with
:func:`tunable` carry a search range, which :meth:`FTMethod.search_space` exposes to the search layer.
Register a method with ``@register_ft_method("name")``; a duplicate name is an error.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from workers.accel import Accel
from workers.errors import UnknownFTMethod, invalid_spec_from
from workers.model import Classifier
from workers.objective import text_tower_names
from workers.registry import Registry
from workers.tasks.base import TaskData
from workers.training import evaluate_task

HeadInit = Literal["lp", "random"]
HEAD_PREFIX = "head."


@dataclass(frozen=True)
class SearchRange:
    """Where the search layer may sample one hyperparameter (``log``: log-uniform)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False


def tunable(
    default: Any,
    *,
    low: float,
    high: float,
    log: bool = False,
    integer: bool = False,
    description: str = "",
    **constraints: Any,
) -> Any:
    """A pydantic ``Field`` that also declares a search range (``constraints``: ge, gt, le, lt)."""
    extra: dict[str, Any] = {"search": {"low": low, "high": high, "log": log, "integer": integer}}
    return Field(default, description=description, json_schema_extra=extra, **constraints)


class MethodParams(BaseModel):
    """Base of every method's ``Params``: strict (unknown keys are errors) and immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class HeadParams(MethodParams):
    """Params of a method that may start from either head."""

    head_init: HeadInit = Field(
        default="random", description="Start from a seeded random head or the task's linear-probe head."
    )


@dataclass(frozen=True)
class StepBatch:
    """One training minibatch as the loop saw it: inputs, labels, backbone features and logits."""

    x: torch.Tensor
    y: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor


@dataclass
class RunContext:
    """What a method may read during one run.

    ``init_params`` (θ0: every parameter by name, an independent copy) and ``initial_state`` (the full state
    dict at θ0) are filled right after :meth:`FTMethod.setup`; ``lp_head`` is the task's linear-probe head
    (shared, on CPU: copy it before use, never modify it).
    """

    data: TaskData
    device: torch.device
    metrics: tuple[str, ...]
    seed: int
    steps: int
    lp_head: nn.Linear
    init_params: dict[str, torch.Tensor] = field(default_factory=dict)
    initial_state: dict[str, torch.Tensor] = field(default_factory=dict)
    #: precision / memory format / input pipeline of the run (default: fp32 on ``device``)
    accel: Accel | None = None

    def accel_or_default(self) -> Accel:
        return self.accel or Accel(self.device)

    def evaluate(
        self, model: nn.Module, splits: Sequence[str], metrics: Sequence[str] | None = None
    ) -> dict[str, float]:
        """``{"<split>/<metric>": value}`` on the named splits (``id_val``, ``ood_val``, ``ood_test/<n>`` …)."""
        return evaluate_task(
            model, self.data, list(splits), metrics or self.metrics, self.device, accel=self.accel
        )


def split_head(named_params: Mapping[str, nn.Parameter]) -> tuple[list[str], list[str]]:
    """(backbone names, head names), each in the given order."""
    head = [n for n in named_params if n.startswith(HEAD_PREFIX)]
    return [n for n in named_params if not n.startswith(HEAD_PREFIX)], head


def adamw_backbone_head(
    named_params: Mapping[str, nn.Parameter],
    *,
    lr: float,
    backbone_weight_decay: float,
    head_weight_decay: float,
) -> torch.optim.AdamW:
    """AdamW with a ``backbone`` and a ``head`` parameter group (empty groups are left out)."""
    backbone, head = split_head(named_params)
    groups = [
        {
            "name": "backbone",
            "params": [named_params[n] for n in backbone],
            "weight_decay": backbone_weight_decay,
        },
        {"name": "head", "params": [named_params[n] for n in head], "weight_decay": head_weight_decay},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def describe_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer as it was built: its class and, per group, the name, LR, weight decay and size."""
    groups = [
        {
            "name": g.get("name", f"group{i}"),
            "lr": float(g["lr"]),
            "weight_decay": float(g.get("weight_decay", 0.0)),
            "tensors": len(g["params"]),
        }
        for i, g in enumerate(optimizer.param_groups)
    ]
    return {"type": type(optimizer).__name__, "groups": groups}


class FTMethod(ABC):  # noqa: B024 - every hook has a default; subclasses override what they change
    """Base class of every fine-tuning method (see the module docstring for the hook order).

    Subclasses set ``summary`` (one line), ``paper`` (the citation, with a link) and ``Params``, and override
    the hooks they need. The defaults are plain fine-tuning: every parameter that requires grad trained with AdamW at the
    caller's LR and weight decay on cross-entropy, no extra loss, nothing after a step, no post-hoc stage.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    #: Needs a dual-encoder (CLIP-like) model with a text tower (FLYP).
    requires_text_tower: ClassVar[bool] = False
    #: The method's own regulariser replaces the caller's weight decay on the parameters it regularises
    #: (a search should not also search weight decay for them); the effective values are in ``info``.
    replaces_weight_decay: ClassVar[bool] = False
    #: May be a searched training method (``search.methods``); ``False`` for methods that are only
    #: final-stage baselines (a linear probe, a post-hoc interpolation).
    searchable: ClassVar[bool] = True

    def __init__(self, params: MethodParams | None = None) -> None:
        self.params = params if params is not None else self.Params()
        if not isinstance(self.params, self.Params):
            raise TypeError(f"{self.name} expects {self.Params.__name__}, got {type(self.params).__name__}")

    @classmethod
    def validate_params(cls, raw: Mapping[str, Any] | None, *, field: str = "method.params") -> MethodParams:
        """Validate raw hyperparameters; an error is an ``InvalidSpec`` naming ``<field>.<param>``."""
        try:
            return cls.Params.model_validate(dict(raw or {}))
        except ValidationError as e:
            raise invalid_spec_from(e, field) from None

    @classmethod
    def create(cls, raw: Mapping[str, Any] | None = None, *, field: str = "method.params") -> FTMethod:
        """A method instance from raw hyperparameters (validated as in :meth:`validate_params`)."""
        return cls(cls.validate_params(raw, field=field))

    # -- hooks -----------------------------------------------------------------------------------------------

    def check_compatible(self, data: TaskData) -> None:  # noqa: B027 - optional hook
        """Raise ``InvalidSpec`` if this method cannot run on the task's model and data."""

    def head_init(self) -> HeadInit:
        """Which head the run starts from."""
        return getattr(self.params, "head_init", "random")

    def default_loss_weights(self) -> dict[str, float]:
        """The base objective's loss-term weights when the caller passes none."""
        return {"ce": 1.0}

    def setup(self, model: Classifier, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """One-time preparation before θ0 is recorded; resets any state from a previous run."""

    def trainable(self, model: Classifier) -> Iterable[str]:
        """Names of the parameters to train (the rest is frozen).

        Default: the parameters that require grad as the model is built (a CLIP text tower stays frozen),
        plus the text tower when the method ``requires_text_tower``. The loop adds the text tower also when
        a loss term of the objective needs it."""
        text = set(text_tower_names(model)) if self.requires_text_tower else set()
        return [n for n, p in model.named_parameters() if p.requires_grad or n in text]

    def make_optimizer(
        self,
        named_params: dict[str, nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters (default: AdamW, backbone and head groups)."""
        return adamw_backbone_head(
            named_params, lr=lr, backbone_weight_decay=weight_decay, head_weight_decay=weight_decay
        )

    def extra_losses(self, model: Classifier, batch: StepBatch, ctx: RunContext) -> dict[str, torch.Tensor]:
        """Unweighted method-specific loss terms (0-dim tensors) keyed ``<method>/<term>``."""
        return {}

    def loss_weights(self) -> dict[str, float]:
        """The weight of every key :meth:`extra_losses` returns."""
        return {}

    def after_step(self, model: Classifier, step: int, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """Called after every optimizer step (1-based ``step``), e.g. for a projection."""

    def finalize(self, model: Classifier, ctx: RunContext) -> tuple[Classifier, dict[str, Any]]:
        """Post-hoc stage after the last step; returns the final model and what was chosen."""
        return model, {}

    def teardown(self, model: Classifier) -> None:  # noqa: B027 - optional hook
        """Release what ``setup`` acquired (always called)."""

    # -- search ----------------------------------------------------------------------------------------------

    def search_space(self) -> dict[str, SearchRange]:
        """The tunable hyperparameters by ``Params`` field name, with their search ranges."""
        out: dict[str, SearchRange] = {}
        for fname, info in self.Params.model_fields.items():
            extra: Any = info.json_schema_extra
            s = extra.get("search") if isinstance(extra, dict) else None
            if isinstance(s, dict):
                out[fname] = SearchRange(
                    float(s["low"]), float(s["high"]), bool(s["log"]), bool(s["integer"])
                )
        return out


FT_METHODS: Registry[type[FTMethod]] = Registry("fine-tuning method", UnknownFTMethod)


#: Class decorator registering an :class:`FTMethod` under ``name`` (:meth:`Registry.register`; a duplicate
#: name raises).
register_ft_method = FT_METHODS.register


def create_method(
    name: str, params: Mapping[str, Any] | None = None, *, field: str = "final.baselines"
) -> FTMethod:
    """Resolve a method name and validate its parameters; errors name ``field`` / ``field.params.<p>``."""
    cls = FT_METHODS.get(name, field=field)
    return cls.create(params, field=f"{field}.params")
