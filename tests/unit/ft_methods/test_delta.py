"""DELTA: zero at initialisation, positive after a step; attention weights; conv and token layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.unit.ft_methods.helpers import run
from workers.ft_methods import create_method
from workers.ft_methods.delta import channel_attention, default_layers, feature_map_distance
from workers.prepared import PreparedTask
from workers.tasks.base import Split, TaskData
from workers.tasks.digits import DigitsCNN


def test_zero_at_initialisation_and_positive_after_a_step(prepared: PreparedTask) -> None:
    seen: list[dict[str, float]] = []
    method = create_method("delta", {"attention_samples": 32})
    run(method, prepared, steps=2, lr=1e-2, eval_every=1, on_eval=lambda step, m: seen.append(m))
    assert seen[0]["train/loss/delta/features"] == 0.0  # step 1 sees the pretrained weights exactly
    assert seen[1]["train/loss/delta/features"] > 0.0
    assert seen[0]["train/loss/delta/head_l2"] > 0.0


def test_default_layers_and_attention_weights(prepared: PreparedTask) -> None:
    backbone = prepared.data.backbone
    layers = default_layers(backbone)
    assert layers == ["net.0", "net.4", "net.7", "net.11"]  # every Conv2d of DigitsCNN
    x, y = prepared.data.id_train.x[:40], prepared.data.id_train.y[:40]
    weights = channel_attention(backbone, prepared.lp_head, layers, x, y)
    modules = dict(backbone.named_modules())
    for name in layers:
        w = weights[name]
        assert w.shape == (modules[name].out_channels,)  # type: ignore[union-attr]
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-5) and (w > 0).all()
        assert float(w.max() - w.min()) > 0  # channels matter unequally


def test_feature_distance_by_hand_for_conv_and_token_layouts() -> None:
    # conv (b=1, c=2, h=1, w=2): channel 0 differs by (1, 1), channel 1 by (0, 2); L = 2
    s = torch.tensor([[[[1.0, 1.0]], [[0.0, 2.0]]]])
    t = torch.zeros_like(s)
    w = torch.tensor([0.25, 0.75])
    # ½·C·Σ_c W_c·‖Δ_c‖²/L = ½·2·(0.25·2 + 0.75·4)/2 = 1.75
    assert float(feature_map_distance(s, t, w, cdim=1)) == pytest.approx(1.75)
    # the same numbers as tokens (b=1, t=2, c=2), channels last
    tokens = s.squeeze(2).transpose(1, 2)
    assert float(feature_map_distance(tokens, torch.zeros_like(tokens), w, cdim=-1)) == pytest.approx(1.75)


def test_transformer_blocks_are_the_default_layers() -> None:
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    backbone = nn.Sequential(
        nn.Linear(4, 8), nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    )
    assert default_layers(backbone) == ["1.layers.0", "1.layers.1"]
    assert default_layers(DigitsCNN()) == ["net.0", "net.4", "net.7", "net.11"]


def test_unknown_layer_is_refused(prepared: PreparedTask) -> None:
    with pytest.raises(ValueError, match="unknown backbone modules"):
        run(create_method("delta", {"layers": ["net.99"]}), prepared)


class TokenBackbone(nn.Module):
    """Tokens (b, t, 4) → two transformer blocks (no dropout) → mean over tokens (b, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        block = nn.TransformerEncoderLayer(
            d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True
        )
        self.blocks = nn.TransformerEncoder(block, num_layers=2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embed(x)).mean(dim=1)


def test_delta_on_transformer_blocks() -> None:
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        return Split(torch.randn(n, 5, 4, generator=g) + y.view(-1, 1, 1), y)

    torch.manual_seed(0)
    data = TaskData(
        backbone=TokenBackbone(), feature_dim=8, num_classes=3, id_train=split(24), id_val=split(9),
        id_test=split(9), ood_val=split(9), ood_tests={"shift": split(9)},
    )  # fmt: skip
    prepared = PreparedTask(data=data, lp_head=nn.Linear(8, 3))
    seen: list[dict[str, float]] = []
    method = create_method("delta")
    result = run(method, prepared, steps=2, lr=1e-2, eval_every=1, on_eval=lambda s, m: seen.append(m))
    assert result.info["delta/layers"] == ["blocks.layers.0", "blocks.layers.1"]
    assert seen[0]["train/loss/delta/features"] == 0.0 < seen[1]["train/loss/delta/features"]
