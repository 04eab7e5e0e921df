"""ImageNet-C-style corruptions (Hendrycks & Dietterich, 2019): an OOD validation set from ID images.

Every corruption maps a batch ``[N, C, H, W]`` (uint8 in 0..255, as the image cache holds it, or floating
point in [0, 1]) and a severity 1..5 to a new batch of the same shape, dtype and range; the input is never
modified. Given the same ``seed`` the result is the same (only ``gaussian_noise`` draws random numbers).

The parameters are ImageNet-C's (``make_imagenet_c.py``), for its 224 px images:

============== ==================================== ====== ====== ====== ====== ======
name           parameter                            1      2      3      4      5
============== ==================================== ====== ====== ====== ====== ======
gaussian_noise noise std (pixel values in [0, 1])   0.08   0.12   0.18   0.26   0.38
gaussian_blur  sigma in px at 224 px                1      2      3      4      6
contrast       factor on the distance to the mean   0.4    0.3    0.2    0.1    0.05
jpeg           JPEG quality                         25     18     15     10     7
pixelate       downscale factor (box down, up)      0.6    0.5    0.4    0.3    0.25
============== ==================================== ====== ====== ====== ====== ======

The blur's sigma scales with the image (``sigma * min(H, W) / 224``), so a corruption looks the same at
any input size, as if ImageNet-C's 224 px image were resized to the model's geometry; on inputs far
smaller than 224 px the mildest blurs barely change the image. Contrast pulls each channel towards its
per-image mean. JPEG and pixelate go through Pillow, so they need 1 or 3 channels.

Register another with ``@register_corruption("name")`` on a function ``(images, severity, seed) -> images``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from workers.errors import UnknownName
from workers.registry import Registry

#: ``(images [N, C, H, W], severity 1..5, seed) -> corrupted images`` (same shape, dtype and range).
Corruption = Callable[[torch.Tensor, int, int], torch.Tensor]

SEVERITIES = (1, 2, 3, 4, 5)
#: The size ImageNet-C's parameters are given for (its images are 224 x 224).
REFERENCE_SIZE = 224


class UnknownCorruption(UnknownName):
    """A corruption name that is not registered."""

    code = "unknown_corruption"


CORRUPTIONS: Registry[Corruption] = Registry("corruption", UnknownCorruption)
#: Function decorator registering a :data:`Corruption` under ``name`` (:meth:`Registry.register`).
register_corruption = CORRUPTIONS.register


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Apply the registered corruption ``name`` (an unknown name raises, listing the valid ones)."""
    return CORRUPTIONS.get(name)(images, severity, seed)


def _level(values: tuple[float, ...], severity: int) -> float:
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return values[severity - 1]


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 in [0, 1] (a new tensor)."""
    if x.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    if not x.is_floating_point():
        raise ValueError(f"expected uint8 or floating-point images, got {x.dtype}")
    return x.to(torch.float32, copy=True)


def _to_uint8(y: torch.Tensor) -> torch.Tensor:
    return (y.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)


def _like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` (float in ~[0, 1]) back in ``x``'s dtype and range."""
    return _to_uint8(y) if x.dtype == torch.uint8 else y.clamp(0.0, 1.0).to(x.dtype)


@register_corruption("gaussian_noise")
def gaussian_noise(images: torch.Tensor, severity: int, seed: int = 0) -> torch.Tensor:
    """Additive Gaussian noise, the same draw for the same ``seed`` and shape."""
    std = _level((0.08, 0.12, 0.18, 0.26, 0.38), severity)
    y = _as_float(images)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(y.shape, generator=gen, dtype=torch.float32).to(y.device)
    return _like(y + std * noise, images)


def _blur_matrix(sigma: float, size: int) -> torch.Tensor:
    """``[size, size]``: row ``i`` holds the Gaussian weights of output pixel ``i`` over the input pixels,
    truncated at 4 sigma (as scipy, skimage), the edge pixels extended (skimage's ``mode="nearest"``)."""
    radius = max(1, math.ceil(4.0 * sigma))
    t = torch.arange(-radius, radius + 1)
    k = torch.exp(-0.5 * (t.to(torch.float64) / sigma) ** 2)
    k = k / k.sum()
    src = (torch.arange(size)[:, None] + t[None, :]).clamp(0, size - 1)  # [size, 2r+1]
    m = torch.zeros(size, size, dtype=torch.float64)
    m.scatter_add_(1, src, k.expand(size, -1).contiguous())
    return m.to(torch.float32)


@register_corruption("gaussian_blur")
def gaussian_blur(images: torch.Tensor, severity: int, seed: int = 0) -> torch.Tensor:
    """Separable Gaussian blur, edges extended (skimage's ``mode="nearest"``); sigma scales with the size."""
    y = _as_float(images)
    h, w = y.shape[-2:]
    sigma = _level((1.0, 2.0, 3.0, 4.0, 6.0), severity) * min(h, w) / REFERENCE_SIZE
    rows, cols = _blur_matrix(sigma, h).to(y.device), _blur_matrix(sigma, w).to(y.device)
    return _like(rows @ y @ cols.T, images)


@register_corruption("contrast")
def contrast(images: torch.Tensor, severity: int, seed: int = 0) -> torch.Tensor:
    """Each channel pulled towards its per-image mean: ``(x - mean) * factor + mean``."""
    factor = _level((0.4, 0.3, 0.2, 0.1, 0.05), severity)
    y = _as_float(images)
    mean = y.mean(dim=(2, 3), keepdim=True)
    return _like((y - mean) * factor + mean, images)


def _per_image(images: torch.Tensor, op: Callable[[Image.Image], Image.Image]) -> torch.Tensor:
    """``op`` on each image as a Pillow image (1 or 3 channels); the result in ``images``' dtype and range."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
    u8 = images if images.dtype == torch.uint8 else _to_uint8(_as_float(images))
    arr = u8.detach().cpu().permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        pil = Image.fromarray(np.ascontiguousarray(img[..., 0] if img.shape[-1] == 1 else img))
        out[i] = np.asarray(op(pil)).reshape(img.shape)
    result = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)
    return result if images.dtype == torch.uint8 else (result.to(torch.float32) / 255.0).to(images.dtype)


@register_corruption("jpeg")
def jpeg(images: torch.Tensor, severity: int, seed: int = 0) -> torch.Tensor:
    """JPEG compression at a low quality (Pillow, its default chroma subsampling), image by image."""
    quality = int(_level((25, 18, 15, 10, 7), severity))

    def compress(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as decoded:
            decoded.load()
            return decoded.copy()

    return _per_image(images, compress)


@register_corruption("pixelate")
def pixelate(images: torch.Tensor, severity: int, seed: int = 0) -> torch.Tensor:
    """Box-downscaled by a factor and box-upscaled back (Pillow's ``BOX``, as ImageNet-C): blocky pixels."""
    factor = _level((0.6, 0.5, 0.4, 0.3, 0.25), severity)

    def blocks(img: Image.Image) -> Image.Image:
        w, h = img.size
        small = img.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
        return small.resize((w, h), Image.Resampling.BOX)

    return _per_image(images, blocks)
