"""ImageNet-C-style corruptions: shape, dtype and range kept, deterministic, monotone in severity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.images.corruptions import CORRUPTIONS, SEVERITIES, UnknownCorruption, corrupt
from workers.images.synthetic_data import _image

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
