"""The AutoFT objective and every baseline run through the one training loop, and train the same parameters.

A toy dual encoder whose text tower is frozen as built (like CLIP's): the AutoFT path and a baseline train
the same set, so distance-to-init terms are normalised by the same count; a FLYP-like term or method adds
the text tower. The plain AutoFT path trains bit-identically to the loop it replaced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import FAST_TASK_PARAMS
from workers.accel import Accel, TrainMeter, train_batches
from workers.autoft import RunBudget, objective_method, run_objective
from workers.ft_methods import create_method, train_with_method
from workers.ft_methods import train as train_module
from workers.ft_methods.plain import PlainAdamW
from workers.ft_methods.train import trainable_names
from workers.objective import Objective, snapshot_params
from workers.prepared import PreparedTask, build_model, prepared_task
from workers.tasks.base import Split, TaskData
from workers.training import batch_indices, seed_everything
from workers.trial_config import PLAIN_ADAMW, TrialConfig

CPU = torch.device("cpu")


class ToyCLIP(nn.Module):
    """Image tower: a linear map; text tower: mean token embedding, frozen as built."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(6, 8)
        self.text = nn.Embedding(10, 8)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        for p in self.text_parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image(x.flatten(1)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens).mean(dim=1)

    def text_parameters(self) -> list[nn.Parameter]:
        return [self.text.weight]


@dataclass
class TextTaskData(TaskData):
    class_text_tokens: torch.Tensor = field(default_factory=lambda: torch.empty(0))


@pytest.fixture
def toy() -> PreparedTask:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 6, generator=g)

    def split(n: int) -> Split:
        y = torch.arange(n) % 3
        return Split(centers[y] + 0.3 * torch.randn(n, 6, generator=g), y)

    torch.manual_seed(0)
    data = TextTaskData(
        backbone=ToyCLIP(), feature_dim=8, num_classes=3,
        id_train=split(30), id_val=split(12), id_test=split(12), ood_val=split(12), ood_tests={"shift": split(12)},
        class_text_tokens=torch.tensor([[1, 2], [3, 4], [5, 6]]),
    )  # fmt: skip
    return PreparedTask(data=data, lp_head=nn.Linear(8, 3))


class _Recorder:
    """Wraps the loop's ``Objective`` to record what each run's distance terms are normalised over."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[tuple[set[str], int]] = []
        real = train_module.Objective

        def make(*args: Any, **kw: Any) -> Objective:
            obj = real(*args, **kw)
            self.runs.append((set(obj.init_params), obj.num_params))
            return obj

        monkeypatch.setattr(train_module, "Objective", make)


def _autoft(prepared: PreparedTask, weights: dict[str, float]) -> None:
    run_objective(prepared, TrialConfig(weights, 1e-2, 0.0, 0), RunBudget(2, 8), accel=Accel(CPU))


def _baseline(prepared: PreparedTask, name: str, weights: dict[str, float] | None = None) -> None:
    train_with_method(create_method(name), prepared, steps=2, batch_size=8, lr=1e-2, weight_decay=0.0, seed=0,
                      device=CPU, loss_weights=weights)  # fmt: skip


def test_autoft_and_baseline_train_the_same_parameters(
    toy: PreparedTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = _Recorder(monkeypatch)
    _autoft(toy, {"ce": 1.0, "l2_init": 0.5})
    _baseline(toy, "ft", {"ce": 1.0, "l2_init": 0.5})
    (autoft_names, autoft_count), (ft_names, ft_count) = rec.runs
    assert autoft_names == ft_names == {"backbone.image.weight", "backbone.image.bias", "backbone.logit_scale",
                                        "head.weight", "head.bias"}  # fmt: skip
    assert autoft_count == ft_count == 8 * 6 + 8 + 1 + 3 * 8 + 3
    assert toy.data.backbone.text.weight.requires_grad is False  # the pristine model is never touched


def test_a_text_tower_term_or_method_trains_the_text_tower(
    toy: PreparedTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build_model(toy, "lp", 0, CPU)
    assert "backbone.text.weight" not in trainable_names(PlainAdamW(), model, {"ce": 1.0})
    assert "backbone.text.weight" in trainable_names(PlainAdamW(), model, {"ce": 1.0, "flyp": 0.5})
    assert "backbone.text.weight" not in trainable_names(PlainAdamW(), model, {"ce": 1.0, "flyp": 0.0})
    assert "backbone.text.weight" in trainable_names(create_method("flyp"), model, {})
    rec = _Recorder(monkeypatch)
    before = toy.data.backbone.text.weight.detach().clone()
    _autoft(toy, {"ce": 1.0, "flyp": 1.0, "l1_init": 0.1})
    _baseline(toy, "ft", {"ce": 1.0, "flyp": 1.0, "l1_init": 0.1})
    (a_names, a_count), (f_names, f_count) = rec.runs
    assert "backbone.text.weight" in a_names and a_names == f_names and a_count == f_count
    assert torch.equal(toy.data.backbone.text.weight, before)


def test_the_plain_method_is_the_default_of_a_config() -> None:
    assert isinstance(objective_method(TrialConfig({"ce": 1.0}, 1e-3, 0.0, 0)), PlainAdamW)
    plain = objective_method(TrialConfig({"ce": 1.0}, 1e-3, 0.0, 0, method=PLAIN_ADAMW), head="random")
    assert isinstance(plain, PlainAdamW) and plain.head_init() == "random"
    assert objective_method(TrialConfig({"ce": 1.0}, 1e-3, 0.0, 0, method="l2_sp")).name == "l2_sp"


def _replaced_loop(prepared: PreparedTask, weights: dict[str, float], lr: float, wd: float, seed: int,
                   steps: int, batch_size: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """The plain AutoFT loop this refactor replaced (``training.fine_tune`` and its caller), inline."""
    g = seed_everything(seed)
    model = build_model(prepared, "lp", seed, CPU)
    objective = Objective(weights, model, snapshot_params(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    accel = Accel(CPU)
    model.train()
    data = prepared.data
    batches = train_batches(data.id_train, batch_indices(len(data.id_train), batch_size, g), accel)
    meter = TrainMeter(accel, min(batch_size, len(data.id_train)))
    for _ in range(steps):
        x, y = next(batches)
        features = model.features(x)
        losses = objective(model.head(features).float(), y, features=features)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        meter.add(losses)
    return model.state_dict()


def test_plain_autoft_trains_bit_identically_to_the_replaced_loop(task_cache: Path) -> None:
    prepared = prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache)
    weights = {"ce": 1.0, "hinge": 0.3, "l2_init": 0.5, "l1_zero": 0.01}
    old = _replaced_loop(prepared, weights, 3e-3, 0.1, 3, steps=6, batch_size=16)
    new = run_objective(prepared, TrialConfig(weights, 3e-3, 0.1, 3), RunBudget(6, 16, eval_every=2),
                        accel=Accel(CPU), final_eval=False).model.state_dict()  # fmt: skip
    assert old.keys() == new.keys()
    assert all(torch.equal(old[k], new[k]) for k in old)
