"""The training loop uses the LR and seed it is given; the demo task is deterministic and offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_TASK_PARAMS
from workers.tasks import resolve_task
from workers.trainable import PreparedTask, build_model, prepared_task, run_objective, split_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(task_cache: Path) -> PreparedTask:
    return prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache)


@pytest.mark.parametrize("lr", [1e-4, 3e-3])
def test_sampled_lr_is_the_lr_the_optimizer_uses(prepared: PreparedTask, lr: float) -> None:
    seen: list[float] = []
    before = build_model(prepared, "lp", 0, CPU).state_dict()
    model = run_objective(
        prepared, {"ce": 1.0}, lr, 0.0, 0, steps=1, batch_size=16, eval_every=1, metrics=("accuracy",),
        device=CPU, on_eval=lambda step, m: seen.append(m["optim/lr"]),
    )  # fmt: skip
    assert seen == [lr]
    # AdamW's first step moves every parameter with a gradient by ~lr (|m̂/√v̂| = 1): the LR really applied
    delta = max(float((p - before[k]).abs().max()) for k, p in model.state_dict().items())
    assert delta == pytest.approx(lr, rel=0.02)


def test_lr_stays_constant_over_steps(prepared: PreparedTask) -> None:
    seen: list[float] = []
    run_objective(
        prepared, {"ce": 1.0}, 5e-4, 0.1, 0, steps=6, batch_size=16, eval_every=2, metrics=("accuracy",),
        device=CPU, on_eval=lambda step, m: seen.append(m["optim/lr"]),
    )  # fmt: skip
    assert seen == [5e-4, 5e-4, 5e-4]


def test_distance_to_init_grows_during_a_trial(prepared: PreparedTask) -> None:
    seen: list[dict[str, float]] = []
    run_objective(
        prepared, {"ce": 1.0, "l2_init": 1.0, "l1_init": 1.0}, 1e-3, 0.0, 0, steps=4, batch_size=16,
        eval_every=2, metrics=("accuracy",), device=CPU, on_eval=lambda step, m: seen.append(m),
    )  # fmt: skip
    assert 0 < seen[0]["train/loss/l1_init"] < seen[1]["train/loss/l1_init"]
    assert seen[1]["train/loss/l2_init"] > 0


def test_same_seed_same_model(prepared: PreparedTask) -> None:
    kw = dict(steps=3, batch_size=16, eval_every=0, metrics=("accuracy",), device=CPU)
    a = run_objective(prepared, {"ce": 1.0, "hinge": 0.5}, 1e-3, 0.1, 7, **kw).state_dict()  # type: ignore[arg-type]
    b = run_objective(prepared, {"ce": 1.0, "hinge": 0.5}, 1e-3, 0.1, 7, **kw).state_dict()  # type: ignore[arg-type]
    c = run_objective(prepared, {"ce": 1.0, "hinge": 0.5}, 1e-3, 0.1, 8, **kw).state_dict()  # type: ignore[arg-type]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_trials_start_from_the_pretrained_weights(prepared: PreparedTask) -> None:
    run_objective(prepared, {"ce": 1.0}, 1e-2, 0.0, 0, steps=3, batch_size=16, eval_every=0,
                  metrics=("accuracy",), device=CPU)  # fmt: skip
    fresh = build_model(prepared, "lp", 0, CPU)
    pretrained = prepared.data.backbone.state_dict()
    assert all(torch.equal(fresh.backbone.state_dict()[k], v) for k, v in pretrained.items())


def test_split_config_reads_nested_and_flat() -> None:
    nested = {"loss": {"ce": {"weight": 1.0}, "hinge": {"weight": 0.5}}, "optim": {"lr": 0.1, "weight_decay": 0.2},
              "train": {"seed": 3}}  # fmt: skip
    assert split_config(nested) == ({"ce": 1.0, "hinge": 0.5}, 0.1, 0.2, 3)


def test_digits_splits(task_cache: Path) -> None:
    task = resolve_task("digits-shift").create(FAST_TASK_PARAMS, task_cache)
    a, b = task.load(), task.load()
    assert len(a.id_train) == 10 * FAST_TASK_PARAMS["shots_per_class"]
    assert torch.bincount(a.id_train.y).tolist() == [FAST_TASK_PARAMS["shots_per_class"]] * 10
    assert len(a.ood_val) == FAST_TASK_PARAMS["ood_val_size"]
    assert set(a.ood_tests) == {"salt_pepper", "blur", "low_contrast", "invert", "rotate"}
    assert torch.equal(a.ood_tests["blur"].x, b.ood_tests["blur"].x)  # shifts are deterministic
    assert not torch.equal(a.ood_tests["blur"].x, a.id_test.x)
    assert torch.equal(a.ood_tests["blur"].y, a.id_test.y)
    parts = task._partition()  # type: ignore[attr-defined]
    seen: set[int] = set()
    for name in ("pretrain", "train", "val", "ood_val", "test"):
        ids = set(parts[name].tolist())
        assert not ids & seen, f"{name} overlaps another split"
        seen |= ids
    assert a.backbone(a.id_val.x[:3]).shape == (3, a.feature_dim)
