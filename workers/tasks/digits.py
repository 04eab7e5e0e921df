"""The built-in offline demo task: few-shot digit recognition under distribution shift.

Data: scikit-learn's 8x8 digits (shipped with the package), upsampled to 16x16. Half the images (never
used downstream) pretrain a small CNN *without labels* (SimCLR-style contrastive learning on broadly
augmented images: affine, noise, blur, contrast, occlusion, inversion), cached after the first run. The
downstream ID task is few-shot and clean; the OOD validation set is one shift of held-out images; the OOD
test sets are other shifts of the ID test images. Plain fine-tuning on the clean few-shot data distorts the
robust pretrained features, which is the effect AutoFT is meant to avoid.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from workers.disk_cache import cached_tensor, mark_used
from workers.tasks.base import Split, Task, TaskData, pooled, register_task
from workers.tasks.shifts import apply_shift, broad_augment

ShiftName = Literal["noise", "salt_pepper", "blur", "low_contrast", "invert", "occlusion", "rotate"]
DEFAULT_OOD_TEST_SHIFTS: tuple[ShiftName, ...] = ("salt_pepper", "blur", "low_contrast", "invert", "rotate")


class DigitsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shots_per_class: int = Field(default=20, ge=1, le=60, description="ID training images per class.")
    id_val_per_class: int = Field(default=10, ge=1, le=30)
    ood_val_size: int = Field(default=100, ge=10, le=400, description="Images in the OOD validation set.")
    ood_val_shift: ShiftName | list[ShiftName] = Field(
        default="noise",
        description="The OOD val shift, or several: one named OOD val set per shift, each on the same "
        "held-out images (the objective aggregates them).",
    )
    ood_test_shifts: list[ShiftName] = Field(default_factory=lambda: list(DEFAULT_OOD_TEST_SHIFTS), min_length=1)
    severity: float = Field(default=0.8, gt=0, le=1.0)
    split_seed: int = Field(default=0, ge=0)
    pretrain_steps: int = Field(default=500, ge=1, le=100_000)

    @field_validator("ood_test_shifts")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("OOD test shifts must be unique")
        return v


class DigitsCNN(nn.Module):
    """A 4-layer CNN with GroupNorm (no batch statistics, so weight interpolation is well defined)."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU()]

        self.net = nn.Sequential(
            *block(1, 16), nn.MaxPool2d(2),
            *block(16, 32), *block(32, 64), nn.MaxPool2d(2),
            *block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_digit_images(cache_dir: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as [N, 1, 16, 16] floats in [0, 1] and int64 labels; with ``cache_dir``, read from
    (or decoded once into) the task cache, which spares every worker process importing scikit-learn."""
    if cache_dir is not None:
        both = cached_tensor(
            cache_dir / "digits-shift" / "images-16px.pt",
            lambda: _digits_table(*load_digit_images()),
            valid=lambda t: t.shape == (1797, 257),
        )
        return both[:, :256].reshape(-1, 1, 16, 16).contiguous(), both[:, 256].round().to(torch.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    return x, torch.tensor(d.target, dtype=torch.int64)


def _digits_table(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Images and labels as one float table, [N, 256 pixels + label] (a label is exact in float32)."""
    return torch.cat([x.reshape(len(x), -1), y.to(torch.float32)[:, None]], dim=1)


def _nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def pretrain_backbone(images: torch.Tensor, steps: int, seed: int) -> DigitsCNN:
    """Contrastive (label-free) pretraining on broadly augmented images."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = DigitsCNN()
    proj = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    opt = torch.optim.AdamW([*net.parameters(), *proj.parameters()], lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(0, len(images), (256,), generator=g)
        x = images[idx]
        loss = _nt_xent(proj(net(broad_augment(x, g))), proj(net(broad_augment(x, g))), 0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@register_task("digits-shift")
class DigitsShiftTask(Task):
    """Few-shot digits with a label-free pretrained CNN; OOD val and tests are image corruptions."""

    summary = "Offline demo: few-shot 16x16 digits, contrastively pretrained CNN, corruption shifts."
    Params = DigitsParams
    params: DigitsParams

    @classmethod
    def example_params(cls, root: Path) -> dict[str, Any]:
        return {"shots_per_class": 10, "ood_val_size": 60, "pretrain_steps": 40}  # no files needed

    def _cache_path(self) -> Path:
        key = json.dumps({"v": 1, "steps": self.params.pretrain_steps, "torch": torch.__version__[:4]})
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        return self.cache_dir / "digits-shift" / f"backbone-{digest}.pt"

    def revision(self) -> str | None:
        """The images are the scikit-learn package's and the splits follow from the params: what can
        change is the cached pretrained backbone, written by an atomic rename, so its file's inode and size
        (not its mtime, which every cache hit touches); ``None`` before :meth:`prepare` wrote it."""
        try:
            st = self._cache_path().stat()
        except OSError:
            return None
        return f"backbone:{st.st_ino}:{st.st_size}"

    def _partition(self, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Index sets of the digits (labels ``y``, read from the cache when not given): pretrain (half,
        never used downstream), then the downstream splits."""
        if y is None:
            _, y = load_digit_images(self.cache_dir)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(12345))
        pretrain, downstream = perm[: len(y) // 2], perm[len(y) // 2 :]
        g = torch.Generator().manual_seed(self.params.split_seed)
        downstream = downstream[torch.randperm(len(downstream), generator=g)]
        p = self.params
        train, val, rest = [], [], []
        counts = {c: 0 for c in range(10)}
        for i in downstream.tolist():
            c = int(y[i])
            if counts[c] < p.shots_per_class:
                train.append(i)
            elif counts[c] < p.shots_per_class + p.id_val_per_class:
                val.append(i)
            else:
                rest.append(i)
            counts[c] += 1
        ood_val = rest[: p.ood_val_size]
        test = rest[p.ood_val_size :]
        t = torch.tensor
        return {
            "pretrain": pretrain,
            "train": t(train),
            "val": t(val),
            "ood_val": t(ood_val),
            "test": t(test),
        }

    def prepare(self) -> None:
        path = self._cache_path()
        if path.exists():
            mark_used(path)
            return
        x, y = load_digit_images(self.cache_dir)
        net = pretrain_backbone(x[self._partition(y)["pretrain"]], self.params.pretrain_steps, seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(net.state_dict(), tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file

    def load(self) -> TaskData:
        path = self._cache_path()
        self.prepare()  # a no-op when the backbone is cached
        backbone = DigitsCNN()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:  # the cache was pruned in between
            self.prepare()
            state = torch.load(path, map_location="cpu", weights_only=True)
        backbone.load_state_dict(state)
        x, y = load_digit_images(self.cache_dir)
        parts = self._partition(y)
        p = self.params

        def split(idx: torch.Tensor, xs: torch.Tensor | None = None) -> Split:
            return Split(x[idx] if xs is None else xs, y[idx])

        test_idx = parts["test"]
        ood_tests: dict[str, Split] = {}
        for k, name in enumerate(p.ood_test_shifts):
            shifted = apply_shift(name, x[test_idx], seed=1000 + k, severity=p.severity)
            ood_tests[name] = split(test_idx, shifted)
        val_idx = parts["ood_val"]
        sets: dict[str, Split] = {}
        if isinstance(p.ood_val_shift, list):
            sets = {
                name: split(val_idx, apply_shift(name, x[val_idx], seed=999 + k, severity=p.severity))
                for k, name in enumerate(dict.fromkeys(p.ood_val_shift))
            }
            ood_val = pooled(list(sets.values()))
        else:
            ood_val = split(val_idx, apply_shift(p.ood_val_shift, x[val_idx], seed=999, severity=p.severity))
        return TaskData(
            backbone=backbone,
            feature_dim=DigitsCNN.feature_dim,
            num_classes=10,
            id_train=split(parts["train"]),
            id_val=split(parts["val"]),
            id_test=split(test_idx),
            ood_val=ood_val,
            ood_tests=ood_tests,
            ood_val_sets=sets,
        )
