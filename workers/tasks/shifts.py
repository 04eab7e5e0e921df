"""Image distribution shifts for [N, 1, H, W] tensors in [0, 1], deterministic given a generator.

The same families serve two purposes: broad random augmentation when pretraining the demo backbone (so the
pretrained features are robust, like a foundation model's), and fixed shifts that build the OOD splits.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Shift = Callable[[torch.Tensor, torch.Generator, float], torch.Tensor]


def _rand(n: int, g: torch.Generator, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def gaussian_noise(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    return (x + 0.45 * s * torch.randn(x.shape, generator=g)).clamp(0, 1)


def salt_pepper(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    u = torch.rand(x.shape, generator=g)
    p = 0.22 * s
    return torch.where(u < p / 2, torch.zeros_like(x), torch.where(u > 1 - p / 2, torch.ones_like(x), x))


def blur(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    sigma = 0.5 + 1.3 * s
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def low_contrast(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    c = 1.0 - 0.75 * s
    level = _rand(len(x), g, 0.2, 0.8).view(-1, 1, 1, 1)
    return (x * c + (1 - c) * level).clamp(0, 1)


def invert(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    return 1.0 - x


def occlusion(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    n, _, h, w = x.shape
    size = max(1, round(h * (0.25 + 0.25 * s)))
    ys = torch.randint(0, h - size + 1, (n,), generator=g)
    xs = torch.randint(0, w - size + 1, (n,), generator=g)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = (
        (rows >= ys.view(-1, 1, 1))
        & (rows < (ys + size).view(-1, 1, 1))
        & (cols >= xs.view(-1, 1, 1))
        & (cols < (xs + size).view(-1, 1, 1))
    )
    return x.masked_fill(mask.unsqueeze(1), 0.0)


def affine(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    """Random rotation (up to 40°·s), scale and translation."""
    n = len(x)
    ang = _rand(n, g, -1, 1) * math.radians(40) * s
    scale = 1 + _rand(n, g, -0.2, 0.2) * s
    tx, ty = _rand(n, g, -0.2, 0.2) * s, _rand(n, g, -0.2, 0.2) * s
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def rotate(x: torch.Tensor, g: torch.Generator, s: float) -> torch.Tensor:
    """Rotation by ±(15°..45°)·s, sign at random."""
    n = len(x)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    ang = sign * _rand(n, g, 15, 45) * math.radians(1) * s
    cos, sin = torch.cos(ang), torch.sin(ang)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


SHIFTS: dict[str, Shift] = {
    "noise": gaussian_noise,
    "salt_pepper": salt_pepper,
    "blur": blur,
    "low_contrast": low_contrast,
    "invert": invert,
    "occlusion": occlusion,
    "rotate": rotate,
}


def apply_shift(name: str, x: torch.Tensor, seed: int, severity: float) -> torch.Tensor:
    """Apply the named shift with its own seeded generator (the same call gives the same images)."""
    g = torch.Generator().manual_seed(seed)
    return SHIFTS[name](x, g, severity)


def broad_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Pretraining augmentation: a random affine, then each corruption family with some probability."""
    x = affine(x, g, 1.0)
    n = len(x)
    for name in ("noise", "salt_pepper", "blur", "low_contrast", "occlusion", "invert"):
        p = 0.25 if name != "invert" else 0.2
        chosen = torch.rand(n, generator=g) < p
        if chosen.any():
            sev = float(_rand(1, g, 0.3, 1.0))
            x = torch.where(chosen.view(-1, 1, 1, 1), SHIFTS[name](x, g, sev), x)
    return x
