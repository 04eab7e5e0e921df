"""ImageNet-C-style corruptions (shape, dtype and range kept, deterministic, monotone in severity) and the
``image-classification`` task's OOD validation set derived from its ID val images with them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autoft_service.errors import InvalidSpec
from autoft_service.spec import parse_spec
from tests.conftest import small_spec
from workers.images.corruptions import CORRUPTIONS, SEVERITIES, UnknownCorruption, corrupt
from workers.images.synthetic_data import _image, make_image_folder
from workers.images.task import ImageClassificationTask
from workers.images.tiny_models import save_tiny_timm

ALL = ["contrast", "gaussian_blur", "gaussian_noise", "jpeg", "pixelate"]
#: Those whose distance to the clean image must grow with every severity step (JPEG's need not, strictly).
MONOTONE = ["contrast", "gaussian_blur", "gaussian_noise", "pixelate"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Six synthetic uint8 images [6, 3, 96, 96] (96 px: even the mildest blur changes them)."""
    arr = np.stack(
        [_image(k, i, 3, 96, seed=0, shift=None, severity=0.0) for k in range(3) for i in range(2)]
    )
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.to(torch.float32) - b.to(torch.float32)).abs().mean().item()


def test_the_registry_holds_the_five_corruptions() -> None:
    assert CORRUPTIONS.names() == ALL
    with pytest.raises(UnknownCorruption) as e:
        corrupt(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "fog", 1)
    assert "fog" in str(e.value) and "gaussian_noise" in str(e.value)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_keeps_shape_dtype_and_range_and_changes_the_image(
    images: torch.Tensor, name: str, severity: int
) -> None:
    before = images.clone()
    out = corrupt(images, name, severity, seed=0)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert distance(out, images) > 0.5  # mean absolute change in pixel values 0..255
    assert torch.equal(images, before)  # the input is not modified

    floats = images.to(torch.float32) / 255.0
    out_f = corrupt(floats, name, severity, seed=0)
    assert out_f.dtype == torch.float32 and out_f.shape == floats.shape
    assert out_f.min() >= 0.0 and out_f.max() <= 1.0
    # the same corruption on the float and the uint8 image, up to the rounding to 0..255
    assert distance(out_f * 255.0, out) < 1.0


@pytest.mark.parametrize("name", ALL)
def test_is_deterministic_per_seed(images: torch.Tensor, name: str) -> None:
    a, b = corrupt(images, name, 3, seed=7), corrupt(images, name, 3, seed=7)
    assert torch.equal(a, b)
    if name == "gaussian_noise":  # the only random one: another seed, another draw
        assert not torch.equal(a, corrupt(images, name, 3, seed=8))


@pytest.mark.parametrize("name", MONOTONE)
def test_higher_severity_moves_further_from_the_clean_image(images: torch.Tensor, name: str) -> None:
    d = [distance(corrupt(images, name, s, seed=0), images) for s in SEVERITIES]
    assert all(lo < hi for lo, hi in zip(d, d[1:], strict=False)), d


def test_jpeg_gets_blockier_from_the_mildest_to_the_strongest(images: torch.Tensor) -> None:
    assert distance(corrupt(images, "jpeg", 5), images) > distance(corrupt(images, "jpeg", 1), images)


def test_blur_matches_a_reference_gaussian_filter(images: torch.Tensor) -> None:
    """Severity 3 (sigma 3 px at 224 px) on a 96 px image: sigma 3 * 96 / 224, edges extended."""
    sigma = 3 * 96 / 224
    radius = int(np.ceil(4 * sigma))
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    x = images[:1].to(torch.float64).numpy() / 255.0
    pad = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="edge")
    rows = sum(k[j] * pad[:, :, j : j + 96, :] for j in range(len(k)))
    ref = sum(k[j] * rows[:, :, :, j : j + 96] for j in range(len(k)))
    ref_u8 = torch.from_numpy(np.rint(np.clip(ref, 0, 1) * 255.0))
    assert (corrupt(images[:1], "gaussian_blur", 3).to(torch.float64) - ref_u8).abs().max() <= 1.0


def test_contrast_keeps_each_channel_mean(images: torch.Tensor) -> None:
    out = corrupt(images, "contrast", 5)
    assert torch.allclose(out.float().mean(dim=(2, 3)), images.float().mean(dim=(2, 3)), atol=1.0)
    # factor 0.05: each channel's spread shrinks twentyfold (up to the rounding to integers)
    spread, before = out.float().std(dim=(2, 3)), images.float().std(dim=(2, 3))
    assert torch.all(spread <= 0.05 * before + 0.6) and torch.all(spread < 0.2 * before)


def test_pixelate_makes_blocks() -> None:
    x = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = corrupt(x, "pixelate", 5)  # factor 0.25: 16 x 16 blocks of 4 x 4 identical pixels
    assert torch.equal(out, out[:, :, ::4, ::4].repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


@pytest.mark.parametrize("bad", [0, 6, 2.5, True])
def test_a_severity_outside_1_to_5_is_refused(images: torch.Tensor, bad: object) -> None:
    with pytest.raises(ValueError, match="severity"):
        corrupt(images, "contrast", bad)  # type: ignore[arg-type]


def test_wrong_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        corrupt(torch.zeros(3, 8, 8, dtype=torch.uint8), "contrast", 1)
    with pytest.raises(ValueError, match="1 or 3"):
        corrupt(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), "jpeg", 1)
    with pytest.raises(ValueError, match="uint8 or floating"):
        corrupt(torch.zeros(1, 3, 8, 8, dtype=torch.int64), "gaussian_noise", 1)


# ------------------------------------------------------------------ The task's OOD val made from its ID val


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("root")
    save_tiny_timm(r / "timm")
    make_image_folder(r / "train", ["a", "b", "c"], 6, seed=1)
    make_image_folder(r / "test", ["a", "b", "c"], 2, seed=2)
    return r


def task_params(**kw: Any) -> dict[str, Any]:
    """ID val: a class-balanced hold-out of 6 of the 18 ID-train images; no OOD val of the user's own."""
    data = {
        "id_train": {"format": "imagefolder", "path": "train"},
        "id_test": {"format": "imagefolder", "path": "test"},
    }
    return {
        "model": {"family": "timm", "path": "timm"},
        "data": data,
        "id_val_size": 6,
        "decode_workers": 1,
        **kw,
    }


def test_the_task_derives_its_ood_val_from_the_id_val_images(root: Path, tmp_path: Path) -> None:
    spec = {"names": ["gaussian_noise", "pixelate"], "severity": 3}
    data = ImageClassificationTask.create(
        task_params(ood_val_corruptions=spec), tmp_path, data_roots=[root]
    ).load()
    val, ood = data.id_val, data.ood_val
    assert len(val) == 6 and len(ood) == 12  # each corruption of each ID val image
    assert ood.x.dtype == torch.uint8 and ood.x.shape[1:] == val.x.shape[1:]
    assert torch.equal(ood.y, torch.cat([val.y, val.y]))
    assert ood.groups is not None and ood.groups.tolist() == [0] * 6 + [1] * 6  # a group per corruption
    assert torch.equal(ood.x[6:], corrupt(val.x, "pixelate", 3))  # deterministic: exactly the corruption
    # one named OOD val set per corruption: the objective aggregates them (mean or worst)
    assert list(data.ood_val_sets) == ["gaussian_noise", "pixelate"]
    assert torch.equal(data.ood_val_sets["pixelate"].x, ood.x[6:])
    assert torch.equal(data.ood_val_sets["gaussian_noise"].y, val.y)
    noisy = ood.x[:6]
    assert 10 < distance(noisy, val.x) < 80  # severity 3: noise of std 0.18 (46 of 255), clipped
    # the images were computed once into the image cache: another load maps the same bytes
    again = ImageClassificationTask.create(
        task_params(ood_val_corruptions=spec), tmp_path, data_roots=[root]
    ).load()
    assert torch.equal(again.ood_val.x, ood.x)
    other = {**spec, "seed": 1}  # another seed: other noise, the same pixelation
    reseeded = ImageClassificationTask.create(
        task_params(ood_val_corruptions=other), tmp_path, data_roots=[root]
    )
    ood1 = reseeded.load().ood_val
    assert not torch.equal(ood1.x[:6], noisy) and torch.equal(ood1.x[6:], ood.x[6:])


def test_ood_val_size_subsamples_balanced_over_classes_and_corruptions(root: Path, tmp_path: Path) -> None:
    params = task_params(ood_val_corruptions={"severity": 5}, ood_val_size=9)  # all five: a pool of 30
    data = ImageClassificationTask.create(params, tmp_path, data_roots=[root]).load()
    ood = data.ood_val
    assert len(ood) == 9 and torch.bincount(ood.y).tolist() == [3, 3, 3]
    assert ood.groups is not None
    pairs = list(zip(ood.y.tolist(), ood.groups.tolist(), strict=True))
    assert len(set(pairs)) == 9  # within a class, three different corruptions
    pool = torch.cat([corrupt(data.id_val.x, name, 5) for name in ["contrast", "gaussian_blur"]])
    for x, g in zip(ood.x, ood.groups.tolist(), strict=True):  # each is a corruption of an ID val image
        if g in (0, 1):
            assert any(torch.equal(x, p) for p in pool)


def test_corruption_params_name_their_field(root: Path) -> None:
    with pytest.raises(InvalidSpec) as e:
        ImageClassificationTask.validate_params(
            task_params(ood_val_corruptions={"names": ["gaussian_noise", "fog"]}), data_roots=[root]
        )
    assert e.value.field == "task.params.ood_val_corruptions.names"
    assert "'fog'" in str(e.value) and ", ".join(ALL) in str(e.value)
    schema = ImageClassificationTask.Params.model_json_schema()["$defs"]["OODValCorruptions"]
    assert schema["properties"]["names"]["items"]["enum"] == ALL  # the catalog lists the valid names
    with pytest.raises(InvalidSpec) as e:
        ImageClassificationTask.validate_params(
            task_params(ood_val_corruptions={"severity": 6}), data_roots=[root]
        )
    assert e.value.field == "task.params.ood_val_corruptions.severity"
    with pytest.raises(InvalidSpec) as e:  # neither an OOD val set nor corruptions
        ImageClassificationTask.validate_params(task_params(), data_roots=[root])
    assert e.value.field == "task.params.data.ood_val" and "ood_val_corruptions" in str(e.value)
    both = task_params(ood_val_corruptions={})
    both["data"]["ood_val"] = {"format": "imagefolder", "path": "test"}
    with pytest.raises(InvalidSpec) as e:
        ImageClassificationTask.validate_params(both, data_roots=[root])
    assert e.value.field == "task.params.ood_val_corruptions" and "not both" in str(e.value)


def test_a_job_spec_without_an_ood_val_set_is_accepted_with_corruptions(root: Path) -> None:
    task = {"name": "image-classification", "params": task_params(ood_val_corruptions={"names": ["jpeg"]})}
    spec = parse_spec(small_spec(task=task), data_roots=[root])
    assert spec.task.params["ood_val_corruptions"] == {"names": ["jpeg"]}


def test_a_trial_reports_its_metrics_on_the_corrupted_ood_val(root: Path, tmp_path: Path) -> None:
    from workers.accel import Accel
    from workers.autoft import RunBudget, run_objective
    from workers.prepared import prepared_task
    from workers.trial_config import TrialConfig

    params = task_params(ood_val_corruptions={"names": ["contrast", "jpeg"], "severity": 5})
    prepared = prepared_task("image-classification", params, tmp_path, data_roots=[root])
    seen: list[dict[str, float]] = []
    run_objective(
        prepared, TrialConfig({"ce": 1.0}, 1e-3, 0.0, 0),
        RunBudget(2, 6, metrics=("accuracy", "worst_group_accuracy"), eval_every=2),
        accel=Accel(torch.device("cpu")), on_eval=lambda s, m: seen.append(m), final_eval=False,
    )  # fmt: skip
    last = seen[-1]  # the trial evaluated the derived set: the mean and the worst corruption
    assert 0.0 <= last["ood_val/worst_group_accuracy"] <= last["ood_val/accuracy"] <= 1.0
    assert prepared.data.ood_val.groups is not None and len(prepared.data.ood_val) == 12
