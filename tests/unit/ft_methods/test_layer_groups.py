"""Layer groups cover every parameter exactly once; per-group LRs and distance penalties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoft_service.errors import InvalidSpec
from tests.unit.ft_methods.helpers import CPU, run
from workers.ft_methods import (
    create_method,
    group_distance_penalty,
    layer_groups,
    param_groups_with_multipliers,
)
from workers.model import Classifier
from workers.prepared import PreparedTask, build_model


@pytest.mark.parametrize("n_groups", [1, 2, 3, 4, 8])
def test_groups_cover_every_parameter_exactly_once(prepared: PreparedTask, n_groups: int) -> None:
    model = build_model(prepared, "random", 0, CPU)
    groups = layer_groups(model, n_groups)
    names = [n for n, _ in model.named_parameters()]
    flat = [n for members in groups.values() for n in members]
    assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
    assert list(groups) == [f"group{i}" for i in range(n_groups)] + ["head"]
    assert groups["head"] == ["head.weight", "head.bias"]
    backbone = [n for members in list(groups.values())[:-1] for n in members]
    assert backbone == [n for n in names if n.startswith("backbone.")]  # contiguous, in order
    group_of = {n: g for g, members in groups.items() for n in members}
    by_module: dict[str, set[str]] = {}
    for n in names:
        by_module.setdefault(n.rsplit(".", 1)[0], set()).add(group_of[n])
    assert all(len(gs) == 1 for gs in by_module.values())  # a module's weight and bias stay together


def test_too_many_groups_is_refused(prepared: PreparedTask) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        layer_groups(build_model(prepared, "random", 0, CPU), 9)  # DigitsCNN has 8 modules with parameters


def test_param_groups_carry_the_multiplied_lr() -> None:
    model = Classifier(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), nn.Linear(2, 2))
    groups = layer_groups(model, 2)
    out = param_groups_with_multipliers(model, groups, 0.1, {"group1": 10.0, "head": 0.5}, 0.01)
    assert [(g["name"], g["lr"], g["weight_decay"], len(g["params"])) for g in out] == [
        ("group0", pytest.approx(0.1), 0.01, 2), ("group1", pytest.approx(1.0), 0.01, 2), ("head", pytest.approx(0.05), 0.01, 2),
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown groups"):
        param_groups_with_multipliers(model, groups, 0.1, {"group7": 2.0}, 0.0)


def test_group_distance_penalty_by_hand() -> None:
    params = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([2.0]), "c": torch.tensor([5.0])}
    init = {"a": torch.zeros(2), "b": torch.zeros(1), "c": torch.zeros(1)}
    groups = {"g0": ["a", "b"], "head": ["c"]}
    # g0: mean((1, 3, 2)²) = 14/3; head: 25
    value = group_distance_penalty(params, init, groups, {"g0": 0.3, "head": 0.0})
    assert float(value) == pytest.approx(0.3 * 14 / 3)


def test_layerwise_method_validates_groups_and_trains(prepared: PreparedTask) -> None:
    with pytest.raises(InvalidSpec) as e:
        create_method("layerwise", {"n_groups": 2, "lr_multipliers": {"group5": 2.0}}, field="f")
    assert e.value.field == "f.params"
    method = create_method(
        "layerwise", {"n_groups": 2, "lr_multipliers": {"group0": 0.1}, "l2_weights": {"group1": 1.0}}
    )
    assert {"lr_multipliers.group0", "l2_weights.head"} <= set(method.search_space())
    result = run(method, prepared, steps=2, lr=1e-2)
    lrs = {g["name"]: g["lr"] for g in result.info["optimizer"]["groups"]}
    assert lrs == {"group0": pytest.approx(1e-3), "group1": 1e-2, "head": 1e-2}
    assert "train/loss/layerwise/l2/group1" in result.metrics
