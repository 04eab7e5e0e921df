"""One tensor per file, computed once per machine: concurrent processes wait on a file lock for the first."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_tensor(
    path: Path,
    compute: Callable[[], torch.Tensor],
    valid: Callable[[torch.Tensor], bool] = lambda t: True,
) -> torch.Tensor:
    """The tensor stored at ``path``, or ``compute()`` stored there atomically first. Under a lock, so one
    process computes while the others wait and then read; an unreadable or invalid file is recomputed."""
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                t = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(t, torch.Tensor) and valid(t):
                    return t
            except Exception:  # a truncated or foreign file: recompute it
                pass
        t = compute().detach().cpu()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(t, tmp)
        os.replace(tmp, path)
        return t
