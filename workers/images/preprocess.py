"""The model's own input preprocessing, split in two halves.

Geometry (resize the shorter side, centre-crop to the input size) is applied once, when images are decoded
into the uint8 cache (:mod:`workers.images.data`); the photometric half (scale to [0, 1], subtract the mean,
divide by the std) is the first layer of the backbone (:class:`Normalize`), so it runs on the trial's device,
in the trial's precision, on uint8 batches that are 4x cheaper to store and move than floats.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

Interpolation = Literal["nearest", "bilinear", "bicubic"]


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its images: ``input_size`` (H, W) after resizing the shorter side to ``resize``
    and centre-cropping; then ``(x / 255 - mean) / std`` per channel."""

    input_size: tuple[int, int]
    resize: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: Interpolation = "bicubic"

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h < 1 or w < 1 or self.resize < max(1, min(h, w)):
            raise ValueError(
                f"bad preprocessing geometry: input_size={self.input_size}, resize={self.resize}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ValueError("mean and std need 3 channels and std > 0")

    @classmethod
    def from_crop_pct(
        cls,
        input_size: tuple[int, int],
        crop_pct: float = 0.875,
        **kw: object,
    ) -> Preprocess:
        """timm's convention: resize the shorter side to ``floor(min(input_size) / crop_pct)``."""
        resize = int(min(input_size) / crop_pct)
        return cls(input_size=tuple(input_size), resize=max(resize, min(input_size)), **kw)  # type: ignore[arg-type]

    def geometry_key(self) -> str:
        """What decoding depends on (not mean/std): a short stable hash."""
        g = {"input_size": list(self.input_size), "resize": self.resize, "interpolation": self.interpolation}
        return hashlib.sha256(json.dumps(g, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Normalize(nn.Module):
    """uint8 (or [0, 1] float) images [N, 3, H, W] → ``(x - mean) / std`` floats. No parameters."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std
