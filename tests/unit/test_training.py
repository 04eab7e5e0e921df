"""The training loop uses the LR and seed it is given; the demo task is deterministic and offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_TASK_PARAMS
from workers.accel import Accel
from workers.autoft import RunBudget, run_objective
from workers.prepared import PreparedTask, build_model, prepared_task
from workers.tasks import resolve_task
from workers.trial_config import TrialConfig

CPU = torch.device("cpu")


def _run(prepared: PreparedTask, weights: dict[str, float], lr: float, wd: float, seed: int, *, steps: int,
         eval_every: int = 0, on_eval=None, reuse: bool = False) -> torch.nn.Module:  # type: ignore[no-untyped-def]  # fmt: skip
    return run_objective(
        prepared, TrialConfig(weights, lr, wd, seed), RunBudget(steps, 16, ("accuracy",), eval_every),
        accel=Accel(CPU), on_eval=on_eval, reuse_model=reuse, final_eval=False,
    ).model  # fmt: skip


@pytest.fixture(scope="module")
def prepared(task_cache: Path) -> PreparedTask:
    return prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache)


@pytest.mark.parametrize("lr", [1e-4, 3e-3])
def test_sampled_lr_is_the_lr_the_optimizer_uses(prepared: PreparedTask, lr: float) -> None:
    seen: list[float] = []
    before = build_model(prepared, "lp", 0, CPU).state_dict()
    model = _run(prepared, {"ce": 1.0}, lr, 0.0, 0, steps=1, eval_every=1,
                 on_eval=lambda step, m: seen.append(m["optim/lr"]))  # fmt: skip
    assert seen == [lr]
    # AdamW's first step moves every parameter with a gradient by ~lr (|m̂/√v̂| = 1): the LR really applied
    # (the backbone's: the probe head's weights are large enough for float32 rounding to blur the step)
    delta = max(
        float((p - before[k]).abs().max()) for k, p in model.state_dict().items() if not k.startswith("head.")
    )
    assert delta == pytest.approx(lr, rel=0.02)


def test_lr_stays_constant_over_steps(prepared: PreparedTask) -> None:
    seen: list[float] = []
    _run(prepared, {"ce": 1.0}, 5e-4, 0.1, 0, steps=6, eval_every=2,
         on_eval=lambda step, m: seen.append(m["optim/lr"]))  # fmt: skip
    assert seen == [5e-4, 5e-4, 5e-4]


def test_distance_to_init_grows_during_a_trial(prepared: PreparedTask) -> None:
    seen: list[dict[str, float]] = []
    _run(prepared, {"ce": 1.0, "l2_init": 1.0, "l1_init": 1.0}, 1e-3, 0.0, 0, steps=4, eval_every=2,
         on_eval=lambda step, m: seen.append(m))  # fmt: skip
    assert 0 < seen[0]["train/loss/l1_init"] < seen[1]["train/loss/l1_init"]
    assert seen[1]["train/loss/l2_init"] > 0


def test_same_seed_same_model(prepared: PreparedTask) -> None:
    a = _run(prepared, {"ce": 1.0, "hinge": 0.5}, 1e-3, 0.1, 7, steps=3).state_dict()
    b = _run(prepared, {"ce": 1.0, "hinge": 0.5}, 1e-3, 0.1, 7, steps=3).state_dict()
    c = _run(prepared, {"ce": 1.0, "hinge": 0.5}, 1e-3, 0.1, 8, steps=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("reuse", [False, True])
def test_trials_start_from_the_pretrained_weights(prepared: PreparedTask, reuse: bool) -> None:
    pretrained = {k: v.clone() for k, v in prepared.data.backbone.state_dict().items()}  # before any run
    first = _run(prepared, {"ce": 1.0}, 1e-2, 0.0, 0, steps=3, reuse=reuse)
    trained = first.backbone.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in pretrained.items())  # the run moved the weights
    assert all(torch.equal(prepared.data.backbone.state_dict()[k], v) for k, v in pretrained.items())
    second: list[torch.nn.Module] = []
    if reuse:  # the next trial resets the resident model in place: it starts where the first one started
        _run(prepared, {"ce": 1.0}, 0.0, 0.0, 0, steps=1, reuse=True)
        second.append(first)
    else:
        second.append(build_model(prepared, "lp", 0, CPU))
    assert all(torch.equal(second[0].backbone.state_dict()[k], v) for k, v in pretrained.items())


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
