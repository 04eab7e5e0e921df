"""``delta``: DELTA (Li et al., ICLR 2019): keep chosen feature maps close to the frozen pretrained network's.

Loss = objective + α·Ω_feat + β·½‖w_head‖², with

    Ω_feat = 1/b · Σ_j Σ_c ½ · C_j · W_jc · ‖FM_jc(w, x) − FM_jc(w0, x)‖² / L_j

over hooked layers j (``layers``: module names inside the backbone; default: the output of every transformer
block if the backbone has any, else of every Conv/Linear module), channels c (C_j of them) and L_j positions
per channel, for a batch of b examples. FM(w0, x) comes from a frozen copy of the pretrained backbone (an
extra forward per step, no gradient). This is tllib's ``AttentionBehavioralRegularization`` (thuml/
Transfer-Learning-Library ``tllib/regularization/delta.py``) except that it is averaged over the batch
instead of summed, so α does not scale with the batch size. The teacher runs in the student's train/eval
mode (so BatchNorm uses the same batch statistics and the term is exactly zero at initialisation) except that
its dropout is always off; with dropout in the backbone the term is therefore not zero at initialisation.

Feature layouts: Conv outputs are (b, c, …) with channels on dim 1; any other module's output (Linear,
transformer blocks: batch-first (b, t, c)) has channels on the last dim.

Channel attention W_j (``attention=True``, the paper's "att_fea_map"): computed once in ``setup`` with the
pretrained backbone and the task's linear-probe head on up to ``attention_samples`` ID-train examples. Each
channel is zeroed in turn, the increase of the cross-entropy is measured, the increases of a layer are
z-scored and W_j = softmax(z/5), as in tllib's ``calculate_channel_attention``. Cost: one forward per channel.
``attention=False`` uses uniform weights 1/C_j (the paper's plain "fea_map"). The head term and α replace
weight decay (the optimizer is AdamW with weight decay 0, as for L2-SP).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.hooks import RemovableHandle

from workers.ft_methods.base import (
    HEAD_PREFIX,
    FTMethod,
    HeadParams,
    RunContext,
    StepBatch,
    adamw_backbone_head,
    register_ft_method,
    tunable,
)
from workers.model import Classifier

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class DeltaParams(HeadParams):
    alpha: float = tunable(0.01, ge=0.0, le=1000.0, low=1e-4, high=10.0, log=True,
                           description="Weight of the feature-map distance.")  # fmt: skip
    beta: float = tunable(0.01, ge=0.0, le=1000.0, low=1e-4, high=10.0, log=True,
                          description="Weight of ½‖w_head‖².")  # fmt: skip
    layers: tuple[str, ...] | None = Field(
        default=None, min_length=1, description="Backbone module names to hook; default: see the docstring."
    )
    attention: bool = Field(default=True, description="Channel attention weights (else uniform).")
    attention_samples: int = Field(default=128, ge=1, le=100_000)


def default_layers(backbone: nn.Module) -> list[str]:
    """Transformer blocks if there are any (``nn.TransformerEncoderLayer``/``DecoderLayer`` or a class named
    ``*Block``), else every Conv/Linear module."""
    blocks = [
        n
        for n, m in backbone.named_modules()
        if n
        and (
            isinstance(m, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer)
            or type(m).__name__.endswith("Block")
        )
    ]
    if blocks:
        top = [n for n in blocks if not any(n.startswith(f"{o}.") for o in blocks if o != n)]
        return top
    return [n for n, m in backbone.named_modules() if isinstance(m, (*_CONV, nn.Linear))]


def channel_dim(module: nn.Module) -> int:
    """Where a module's output keeps its channels: 1 for convolutions, the last dim otherwise."""
    return 1 if isinstance(module, _CONV) else -1


def feature_map_distance(
    student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, cdim: int
) -> torch.Tensor:
    """1/b · Σ_c ½·C·W_c·‖s_c − t_c‖²/L for one layer (s, t: (b, …) with C channels on ``cdim``)."""
    s = student.movedim(cdim, 1)
    t = teacher.movedim(cdim, 1).detach()
    b, c = s.shape[0], s.shape[1]
    s, t = s.reshape(b, c, -1), t.reshape(b, c, -1)
    d2 = (s - t).pow(2).sum(dim=2)  # (b, c)
    return 0.5 * (c * weights * d2 / s.shape[2]).sum() / b


class _Capture:
    """Forward hooks storing the latest output of each named module (only while ``module.training``
    unless ``always``)."""

    def __init__(self, root: nn.Module, names: list[str], always: bool) -> None:
        modules = dict(root.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = [
            modules[n].register_forward_hook(self._hook(n, always)) for n in names
        ]

    def _hook(self, name: str, always: bool) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if always or module.training:
                self.outputs[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.outputs = {}


@torch.no_grad()
def channel_attention(
    backbone: nn.Module,
    head: nn.Module,
    layers: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Per layer, softmax(z/5) of the z-scored CE increase when each output channel is zeroed."""
    modules = dict(backbone.named_modules())

    def loss() -> float:
        total = 0.0
        for i in range(0, len(x), batch_size):
            total += float(
                F.cross_entropy(head(backbone(x[i : i + batch_size])), y[i : i + batch_size], reduction="sum")
            )
        return total / len(x)

    base = loss()
    out: dict[str, torch.Tensor] = {}
    for name in layers:
        module, cdim = modules[name], channel_dim(modules[name])
        increases: list[float] = []
        for c in range(module_output_channels(backbone, module, x[:1], cdim)):
            handle = module.register_forward_hook(_zero_channel(cdim, c))
            try:
                increases.append(loss() - base)
            finally:
                handle.remove()
        inc = torch.tensor(increases, dtype=torch.float64)
        std = inc.std(unbiased=False)
        z = (inc - inc.mean()) / std if std > 0 else torch.zeros_like(inc)
        out[name] = torch.softmax(z / 5.0, dim=0).to(dtype=x.dtype, device=x.device)
    return out


def _zero_channel(cdim: int, channel: int) -> Callable[[nn.Module, Any, Any], Any]:
    """A forward hook zeroing one output channel (of the first element when the module returns a tuple)."""

    def zeroed(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.select(cdim, channel).zero_()
        return t

    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (zeroed(output[0]), *output[1:])
        return zeroed(output)

    return hook


@torch.no_grad()
def module_output_channels(root: nn.Module, module: nn.Module, x: torch.Tensor, cdim: int) -> int:
    """The number of channels of ``module``'s output for input ``x`` to ``root``."""
    seen: list[int] = []

    def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        seen.append(out.shape[cdim])

    handle = module.register_forward_hook(hook)
    try:
        root(x)
    finally:
        handle.remove()
    return seen[0]


@register_ft_method("delta")
class DELTA(FTMethod):
    summary = "DELTA: attention-weighted feature-map distance to the frozen pretrained backbone."
    paper = (
        "Li, Xiong, Wang, Huan, Chen, Luo, Dou. DELTA: DEep Learning Transfer using Feature Map with "
        "Attention for Convolutional Networks. ICLR 2019. https://arxiv.org/abs/1901.09229"
    )
    Params = DeltaParams
    params: DeltaParams
    replaces_weight_decay = True

    def setup(self, model: Classifier, ctx: RunContext) -> None:
        self.teardown(model)
        backbone = model.backbone
        modules = dict(backbone.named_modules())
        layers = list(self.params.layers) if self.params.layers is not None else default_layers(backbone)
        if unknown := [n for n in layers if n not in modules or not n]:
            raise ValueError(
                f"delta: unknown backbone modules {unknown}; valid: {sorted(n for n in modules if n)}"
            )
        if not layers:
            raise ValueError("delta: the backbone has no Conv/Linear module or block to hook; pass layers")
        self._layers = layers
        self._cdims = {n: channel_dim(modules[n]) for n in layers}
        self._teacher = copy.deepcopy(backbone).eval().requires_grad_(False)
        data = ctx.data
        if self.params.attention:
            g = torch.Generator().manual_seed(ctx.seed)
            idx = torch.randperm(len(data.id_train), generator=g)[: self.params.attention_samples]
            head = copy.deepcopy(ctx.lp_head).to(ctx.device).eval()
            x, y = data.id_train.x[idx].to(ctx.device), data.id_train.y[idx].to(ctx.device)
            self._weights = channel_attention(self._teacher, head, layers, x, y)
        else:
            self._weights = {}
        self._student = _Capture(backbone, layers, always=False)
        self._teacher_capture = _Capture(self._teacher, layers, always=True)

    def make_optimizer(
        self,
        named_params: dict[str, nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        init_params: dict[str, torch.Tensor],
    ) -> torch.optim.Optimizer:
        return adamw_backbone_head(named_params, lr=lr, backbone_weight_decay=0.0, head_weight_decay=0.0)

    def extra_losses(self, model: Classifier, batch: StepBatch, ctx: RunContext) -> dict[str, torch.Tensor]:
        # The teacher runs in the student's mode (same normalisation statistics and kernels, so the term is
        # exactly zero at θ0) but never drops out.
        self._teacher.train(model.backbone.training)
        for m in self._teacher.modules():
            if isinstance(m, nn.modules.dropout._DropoutNd):
                m.eval()
        with torch.no_grad():
            self._teacher(batch.x)
        total = batch.logits.new_zeros(())
        for name in self._layers:
            s = self._student.outputs[name]
            t = self._teacher_capture.outputs[name]
            c = s.shape[self._cdims[name]]
            w = self._weights.get(name)
            if w is None:
                w = s.new_full((c,), 1.0 / c)
            total = total + feature_map_distance(s, t, w, self._cdims[name])
        head = [p.pow(2).sum() for n, p in model.named_parameters() if n.startswith(HEAD_PREFIX)]
        head_l2 = 0.5 * torch.stack(head).sum() if head else total.new_zeros(())
        return {"delta/features": total, "delta/head_l2": head_l2}

    def loss_weights(self) -> dict[str, float]:
        return {"delta/features": self.params.alpha, "delta/head_l2": self.params.beta}

    def finalize(self, model: Classifier, ctx: RunContext) -> tuple[Classifier, dict[str, Any]]:
        return model, {"delta/layers": list(self._layers)}

    def teardown(self, model: Classifier) -> None:
        for attr in ("_student", "_teacher_capture"):
            capture = getattr(self, attr, None)
            if capture is not None:
                capture.remove()
                setattr(self, attr, None)
        self._teacher = None  # type: ignore[assignment]
