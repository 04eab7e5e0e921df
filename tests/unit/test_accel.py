"""The hardware path of a trial: bf16 autocast, channels-last, loader workers, the resident model reset in
place between trials, the on-disk frozen-feature cache. Every ``gpu`` test has a CPU twin just above it."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_TASK_PARAMS
from workers.accel import Accel, train_batches
from workers.autoft import RunBudget, run_objective
from workers.prepared import PreparedTask, build_model, frozen_train_features, prepared_task, reset_in_place
from workers.tasks.base import Split
from workers.trainable import TrialContext
from workers.training import batch_indices
from workers.trial_config import TrialConfig

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def prepared(task_cache: Path) -> PreparedTask:
    return prepared_task("digits-shift", FAST_TASK_PARAMS, task_cache)


def _run(
    prepared: PreparedTask, accel: Accel, *, reuse: bool = False, steps: int = 6
) -> tuple[torch.nn.Module, list]:
    # from a random head: the probe head fits the tiny training set almost perfectly, so its loss is all
    # from a few confidently wrong examples, too spiky to compare the precisions by
    seen: list[dict[str, float]] = []
    model = run_objective(
        prepared, TrialConfig({"ce": 1.0, "l2_init": 0.5}, 1e-3, 0.01, 3),
        RunBudget(steps, 16, ("accuracy",), eval_every=3), accel=accel, on_eval=lambda s, m: seen.append(m),
        reuse_model=reuse, final_eval=False, head="random",
    ).model  # fmt: skip
    return model, seen


def test_accel_policy_per_device() -> None:
    cpu = Accel.for_run(CPU, "auto", cpu_threads=4)
    assert (cpu.amp_dtype, cpu.channels_last, cpu.loader_workers, cpu.precision) == (None, False, 0, "fp32")
    assert Accel.for_run(CPU, "bf16").amp_dtype == torch.bfloat16
    ctx = TrialContext(task_name="t", task_params={}, cache_dir="/tmp", inner_steps=1, eval_every=1,
                       batch_size=1, metrics=("accuracy",), precision="bf16")  # fmt: skip
    assert ctx.accel().precision == "bf16"


def test_bf16_autocast_trains_on_cpu(prepared: PreparedTask) -> None:
    """CPU twin of the GPU AMP test: the same loop under bf16 autocast trains, reports, keeps fp32 weights."""
    accel = Accel.for_run(CPU, "bf16")
    model, seen = _run(prepared, accel)
    fp32_model, fp32_seen = _run(prepared, Accel(CPU))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert [sorted(m) for m in seen] == [sorted(m) for m in fp32_seen]
    assert seen[-1]["train/loss"] == pytest.approx(fp32_seen[-1]["train/loss"], rel=0.05)
    # bf16 really ran: the result is close to, but not bit-identical with, the fp32 run
    diffs = [
        float((a - b).detach().abs().max()) for a, b in zip(model.parameters(), fp32_model.parameters(), strict=True)
    ]
    assert 0 < max(diffs) < 1e-2
    assert seen[-1]["perf/train_images_per_s"] > 0


@pytest.mark.gpu
@needs_cuda
def test_bf16_channels_last_trains_on_gpu(prepared: PreparedTask) -> None:
    accel = Accel.for_run(torch.device("cuda"), "auto", cpu_threads=3)
    assert accel.channels_last and accel.loader_workers == 2
    model, seen = _run(prepared, accel)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert accel.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert seen[-1]["train/loss"] > 0 and seen[-1]["perf/train_images_per_s"] > 0


def test_loader_workers_give_the_same_batches_as_inline() -> None:
    """CPU twin of the CUDA input pipeline: DataLoader workers gather exactly the batches of the inline path."""
    split = Split(torch.arange(40 * 3).view(40, 3), torch.arange(40))
    inline = Accel(CPU)
    workers = Accel(CPU, loader_workers=2)
    a = train_batches(split, batch_indices(40, 8, torch.Generator().manual_seed(5)), inline)
    b = train_batches(split, batch_indices(40, 8, torch.Generator().manual_seed(5)), workers)
    for _ in range(7):  # crosses an epoch boundary
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_channels_last_placement_on_cpu() -> None:
    """CPU twin of channels-last: ``place``/``inputs`` switch the memory format when asked."""
    accel = Accel(CPU, channels_last=True)
    conv = accel.place(torch.nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert accel.inputs(torch.zeros(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)


def test_resident_model_is_reset_in_place_between_trials(prepared: PreparedTask) -> None:
    prepared.resident.clear()
    first, _ = _run(prepared, Accel(CPU), reuse=True)
    ptr = first.backbone.net[0].weight.data_ptr()
    pristine = prepared.data.backbone.state_dict()
    assert any(not torch.equal(v, pristine[k.removeprefix("backbone.")])
               for k, v in first.state_dict().items() if k.startswith("backbone."))  # fmt: skip
    again = build_model(prepared, "lp", 0, CPU, reuse=True)
    assert again is first and again.backbone.net[0].weight.data_ptr() == ptr  # no new allocation
    for k, v in again.backbone.state_dict().items():
        assert torch.equal(v, pristine[k])
    assert all(p.grad is None for p in again.parameters())
    assert torch.equal(again.head.weight, prepared.lp_head.weight)


def test_reused_model_trains_exactly_like_a_fresh_copy(prepared: PreparedTask) -> None:
    prepared.resident.clear()
    _run(prepared, Accel(CPU), reuse=True)  # dirty the resident model with one trial
    reused, seen_reused = _run(prepared, Accel(CPU), reuse=True)
    fresh, seen_fresh = _run(prepared, Accel(CPU), reuse=False)
    strip = [{k: v for k, v in m.items() if not k.startswith("perf/")} for m in seen_reused]
    assert strip == [{k: v for k, v in m.items() if not k.startswith("perf/")} for m in seen_fresh]
    for a, b in zip(reused.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_reset_restores_requires_grad_flags() -> None:
    pristine = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    pristine[1].weight.requires_grad_(False)
    work = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    reset_in_place(work, pristine)
    assert [p.requires_grad for p in work.parameters()] == [True, True, False, True]
    assert torch.equal(work[0].weight, pristine[0].weight)


def test_frozen_features_are_computed_once_and_cached(prepared: PreparedTask, tmp_path: Path) -> None:
    data = prepared.data
    calls = {"n": 0}
    real = data.backbone.forward

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return real(x)

    data.backbone.forward = counting  # type: ignore[method-assign]
    try:
        a = frozen_train_features(data, tmp_path, "key", CPU)
        n = calls["n"]
        b = frozen_train_features(data, tmp_path, "key", CPU)
    finally:
        del data.backbone.forward
    assert n > 0 and calls["n"] == n  # the second call read the cache
    assert torch.equal(a, b) and a.shape == (len(data.id_train), data.feature_dim)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1
    # other weights → another cache entry, never the stale features
    other = copy.deepcopy(data.backbone)
    with torch.no_grad():
        next(other.parameters()).mul_(2.0)
    c = frozen_train_features(dataclasses.replace(data, backbone=other), tmp_path, "key", CPU)
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2 and not torch.equal(a, c)
