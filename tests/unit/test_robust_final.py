"""The robust final stage: a cross-validated probe, WiSE-FT from the start, greedy soups, several OOD val sets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import FAST_TASK_PARAMS
from workers.accel import Accel
from workers.ft_methods import wise_ft_sweep
from workers.methods import FinalContext, average_states, run_method, soup_row, start_metrics
from workers.model import Classifier
from workers.prepared import build_model, prepared_task
from workers.tasks.base import Split, TaskData
from workers.training import evaluate_task, linear_probe_cv, predict

CPU = torch.device("cpu")


def _features(kind: str, n: int = 80, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    if kind == "separable":  # one tiny-scale feature separates the classes: only a weak penalty can use it
        x = torch.randn(n, 8, generator=g)
        x[:, 0] = 0.01 * (2 * y - 1) + 0.0005 * torch.randn(n, generator=g)
        return x, y
    centers = torch.randn(2, 64, generator=g) * 0.4  # weak signal in many noisy dimensions: shrink hard
    return centers[y] + torch.randn(n, 64, generator=g), y


def test_probe_cv_picks_a_weak_penalty_on_separable_and_a_strong_one_on_noisy_features() -> None:
    sep = linear_probe_cv(*_features("separable"), 2)
    noisy = linear_probe_cv(*_features("noisy"), 2)
    assert sep.C >= 1e3, sep.cv
    assert noisy.C <= 1e-2, noisy.cv
    assert sep.folds == noisy.folds == 5
    assert sep.info()["lp/cv_accuracy"] == pytest.approx(max(sep.cv.values()))
    # the chosen C is refit on all the data: it separates the training set
    x, y = _features("separable")
    assert float((sep.head(x).argmax(1) == y).float().mean()) == 1.0


def _ctx(task_cache: Path, **kw: object) -> FinalContext:
    return FinalContext(
        task_name="digits-shift", task_params=dict(FAST_TASK_PARAMS), cache_dir=str(task_cache),
        steps=6, batch_size=16, metrics=("accuracy",), base_lr=3e-3, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _cfg(lr: float, seed: int = 0) -> dict[str, float]:
    return {"loss/ce/weight": 1.0, "optim/lr": lr, "optim/weight_decay": 0.0, "train/seed": seed}


def test_wise_ft_alpha_zero_is_exactly_the_starting_model(task_cache: Path) -> None:
    prepared = prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache)
    start = build_model(prepared, "lp", 0, CPU)
    tuned = run_method("autoft", _ctx(task_cache), _cfg(3e-2), wise_ft=False)
    model = build_model(prepared, "lp", 0, CPU)
    model.load_state_dict(tuned["state_dict"])
    assert any(not torch.equal(v, start.state_dict()[k]) for k, v in model.state_dict().items())
    sweep = wise_ft_sweep(
        model, start.state_dict(), model.state_dict(), [0.0], lambda m: {"s": 0.0}, "s"
    )
    wise = build_model(prepared, "lp", 0, CPU)
    wise.load_state_dict(sweep.state)
    for split in (prepared.data.ood_val, prepared.data.id_test):
        assert torch.equal(predict(wise, split, CPU), predict(start, split, CPU))


def test_wise_ft_row_never_ends_below_the_start_on_ood_val(task_cache: Path) -> None:
    ctx = _ctx(task_cache, wise_ft_alphas=(0.0, 0.5, 1.0))
    start = start_metrics(ctx)
    out = run_method("autoft", ctx, _cfg(0.3))
    wise = out["extra"][0]
    assert wise["method"] == "autoft_wise_ft"
    assert wise["metrics"]["ood_val/accuracy"] >= start["metrics"]["ood_val/accuracy"] - 1e-9
    assert wise["metrics"]["ood_val/accuracy"] >= out["metrics"]["ood_val/accuracy"] - 1e-9
    assert wise["info"]["wise_ft/alpha"] in (0.0, 0.5, 1.0)


def test_lp_row_is_the_cross_validated_start(task_cache: Path) -> None:
    ctx = _ctx(task_cache)
    lp = run_method("lp", ctx)
    start = start_metrics(ctx)
    assert lp["metrics"]["id_test/accuracy"] == start["metrics"]["id_test/accuracy"]
    assert lp["info"]["lp/C"] == start["head"]["lp/C"]
    assert lp["metrics"]["id_test/accuracy/ci_low"] <= lp["metrics"]["id_test/accuracy"]
    assert lp["metrics"]["id_test/accuracy"] <= lp["metrics"]["id_test/accuracy/ci_high"]


def test_soup_never_ends_below_its_first_ingredient(task_cache: Path) -> None:
    ctx = _ctx(task_cache)
    ingredients = [
        run_method(f"autoft_{i}", ctx, _cfg(lr, i), wise_ft=False)
        for i, lr in enumerate([3e-3, 0.5, 1e-4])  # one high-LR ingredient that hurts when averaged in
    ]
    soup = soup_row(ctx, ingredients)
    first = max(o["metrics"]["ood_val/accuracy"] for o in ingredients)
    assert soup["metrics"]["ood_val/accuracy"] >= first - 1e-9
    assert 1 <= soup["info"]["soup/size"] <= 3
    assert soup["info"]["soup/curve"][0]["kept"] is True


def test_average_states_is_the_mean_of_floats_and_keeps_counters() -> None:
    a = {"w": torch.zeros(2), "n": torch.tensor(3)}
    b = {"w": torch.ones(2) * 2, "n": torch.tensor(5)}
    out = average_states([a, b])
    assert torch.equal(out["w"], torch.ones(2)) and int(out["n"]) == 3


class _Fixed(nn.Module):
    """Predicts the label stored in the input's first feature."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(x[:, 0].long(), 2).float()


def _task_with_sets(aggregate: str) -> TaskData:
    def split(pred: list[int], y: list[int]) -> Split:
        return Split(torch.tensor(pred, dtype=torch.float32).unsqueeze(1), torch.tensor(y))

    easy = split([0, 1, 0, 1, 0], [0, 1, 0, 1, 1])  # 4/5 correct
    hard = split([1, 1, 0, 0, 0], [0, 1, 0, 1, 1])  # 2/5 correct
    same = split([0, 1], [0, 1])
    return TaskData(
        backbone=nn.Identity(), feature_dim=1, num_classes=2, id_train=same, id_val=same, id_test=same,
        ood_val=same, ood_tests={"t": same}, ood_val_sets={"easy": easy, "hard": hard},
        ood_val_aggregate=aggregate,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.mark.parametrize(("aggregate", "expected"), [("mean", 0.6), ("worst", 0.4)])
def test_several_ood_val_sets_are_scored_each_and_aggregated(aggregate: str, expected: float) -> None:
    data = _task_with_sets(aggregate)
    out = evaluate_task(_Fixed(), data, ["ood_val"], ("accuracy",), CPU, Accel(CPU))
    assert out["ood_val/easy/accuracy"] == pytest.approx(0.8)
    assert out["ood_val/hard/accuracy"] == pytest.approx(0.4)
    assert out["ood_val/accuracy"] == pytest.approx(expected)
    full = evaluate_task(_Fixed(), data, None, ("accuracy",), CPU, Accel(CPU))
    assert full["ood_val/accuracy"] == pytest.approx(expected)
    assert "ood_test/mean/accuracy" in full


def test_ood_val_set_names_are_checked() -> None:
    s = Split(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="OOD val set name"):
        TaskData(nn.Identity(), 1, 2, s, s, s, s, ood_val_sets={"a/b": s})


def test_a_classifier_model_round_trips_through_average_states(task_cache: Path) -> None:
    prepared = prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache)
    m: Classifier = build_model(prepared, "lp", 0, CPU)
    state = m.state_dict()
    m.load_state_dict(average_states([state, state]))
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())


def test_a_scoring_trial_sends_the_start_and_trains_as_without(
    task_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ray.tune

    import workers.trainable as trainable
    from workers.trial_config import START_RESULT_KEY

    reports: list[dict[str, object]] = []
    monkeypatch.setattr(ray.tune, "report", lambda metrics: reports.append(dict(metrics)))
    base = trainable.TrialContext(
        task_name="digits-shift", task_params=dict(FAST_TASK_PARAMS), cache_dir=str(task_cache),
        inner_steps=6, eval_every=3, batch_size=16, metrics=("accuracy",),
    )  # fmt: skip
    trainable.autoft_trial(_cfg(3e-2), base)
    plain = [dict(r) for r in reports]
    reports.clear()
    import workers.prepared as prepared_mod

    calls: list[int] = []
    real = prepared_mod.score_start
    monkeypatch.setattr(prepared_mod, "score_start", lambda *a: calls.append(1) or real(*a))
    prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache).start.clear()
    scoring = base.model_copy(update={"score_start": True})
    trainable.autoft_trial(_cfg(3e-2), scoring)  # each scoring trial sends the start with its first report
    trainable.autoft_trial(_cfg(3e-2), scoring)
    assert [START_RESULT_KEY in r for r in reports] == [True, False, True, False]
    start = reports[0].pop(START_RESULT_KEY)
    assert reports[2].pop(START_RESULT_KEY) == start
    assert calls == [1]  # scored once for this process and task, then answered from memory

    def scores(rs: list[dict[str, object]]) -> list[dict[str, object]]:  # throughput varies run to run
        return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rs]

    assert scores(reports[:2]) == scores(plain) == scores(reports[2:])  # scoring the start changes nothing
    assert isinstance(start, dict)
    direct = start_metrics(_ctx(task_cache))
    data = prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache).data
    assert start == direct and start["ood_val_size"] == len(data.ood_val)
