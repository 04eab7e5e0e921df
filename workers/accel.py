"""How a trial uses its hardware: device, mixed precision, memory format and input pipeline.

One :class:`Accel` is built per run from the trial's resources and handed to the training and evaluation
loops, which then never decide any of this themselves:

- ``precision``: ``"auto"`` trains under bf16 autocast on a CUDA device that supports it and in fp32
  elsewhere; ``"bf16"`` forces bf16 autocast (also on the CPU, which is how the AMP path is tested without a
  GPU); ``"fp32"`` turns it off. Parameters, optimizer state and the loss terms on weights stay fp32.
- ``channels_last``: on CUDA, models and 4-d inputs use the channels-last memory format (faster convolutions
  under AMP; harmless for ViTs).
- ``loader_workers``: on CUDA, batches are gathered and pinned by DataLoader workers sized to the CPUs given
  to the trial (one CPU stays with the training loop); on the CPU the trial's threads do the compute instead,
  so batches are gathered inline. Either way the batch order comes from the same seeded generator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from workers.contexts import Precision
from workers.tasks.base import Split

M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class Accel:
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    loader_workers: int = 0

    @classmethod
    def for_run(cls, device: torch.device, precision: Precision = "auto", cpu_threads: int = 1) -> Accel:
        cuda = device.type == "cuda"
        if precision == "bf16":
            amp: torch.dtype | None = torch.bfloat16
        elif precision == "auto" and cuda and torch.cuda.is_bf16_supported():
            amp = torch.bfloat16
        else:
            amp = None
        return cls(
            device, amp, channels_last=cuda, loader_workers=max(0, min(8, cpu_threads - 1)) if cuda else 0
        )

    @property
    def precision(self) -> str:
        return "bf16" if self.amp_dtype == torch.bfloat16 else "fp32"

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def place(self, model: M) -> M:
        """Move a model to the device (channels-last on CUDA)."""
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class TrainMeter:
    """What a training loop reports between two evaluations: the mean of each loss component
    (``train/<key>``) and the throughput (``perf/train_images_per_s``).

    :meth:`add` sums the components on the device (no host sync per step); :meth:`flush`, called just before
    an evaluation, returns the means and starts a new window; :meth:`restart`, called right after the
    evaluation and its report, restarts the clock so they are not counted. On CUDA the clock synchronises the
    device, only at those two points."""

    def __init__(self, accel: Accel, batch_size: int) -> None:
        self.accel, self.batch_size = accel, batch_size
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.restart()

    def _sync(self) -> None:
        if self.accel.device.type == "cuda":
            torch.cuda.synchronize(self.accel.device)

    def restart(self) -> None:
        self._sync()
        self.t0 = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums[k] + v.detach() if k in self.sums else v.detach().clone()
        self.count += 1

    def flush(self) -> dict[str, float]:
        self._sync()
        dt = time.perf_counter() - self.t0
        out = {f"train/{k}": float(v) / self.count for k, v in self.sums.items()}
        if dt > 0 and self.count > 0:
            out["perf/train_images_per_s"] = self.count * self.batch_size / dt
        self.sums, self.count = {}, 0
        return out


class _Rows(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Gathers a whole batch from a split given a tensor of row indices (one item = one batch)."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:  # the sampler decides; DataLoader only needs the method to exist
        return len(self.split)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.split.x[idx], self.split.y[idx]


class _IndexStream(torch.utils.data.Sampler[torch.Tensor]):
    def __init__(self, indices: Iterator[torch.Tensor]) -> None:
        self.indices = indices

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.indices


def train_batches(
    split: Split, indices: Iterator[torch.Tensor], accel: Accel
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(x, y)`` batches on the device, in the order of ``indices`` (a seeded index stream).

    With ``accel.loader_workers`` the gathering (and pinning) runs in DataLoader worker processes, a few
    batches ahead; the indices are still drawn in this process, so the order is identical.
    """
    if accel.loader_workers <= 0:
        for idx in indices:
            yield accel.inputs(split.x[idx]), split.y[idx].to(accel.device, non_blocking=True)
        return
    loader = torch.utils.data.DataLoader(
        _Rows(split),
        sampler=_IndexStream(indices),
        batch_size=None,
        num_workers=accel.loader_workers,
        pin_memory=accel.device.type == "cuda",
        prefetch_factor=2,
    )
    for x, y in loader:
        yield accel.inputs(x), y.to(accel.device, non_blocking=True)
