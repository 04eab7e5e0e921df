"""The machine's task cache: one entry per file, computed once per machine (concurrent processes wait on a
file lock for the first), marked when used, and pruned by age or total size.

Entries are the ``.pt`` and ``.npy`` files under the cache folder (decoded images, frozen features, fitted
linear-probe and zero-shot heads, pretrained demo backbones). Every entry can be computed again, and readers treat a missing entry as
a miss, so pruning is safe while jobs run: a process that already opened or mapped a file keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

T = TypeVar("T")


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
    return cached_value(
        path, lambda: compute().detach().cpu(), lambda t: isinstance(t, torch.Tensor) and valid(t)
    )


def cached_value(path: Path, compute: Callable[[], T], valid: Callable[[Any], bool]) -> T:
    """:func:`cached_tensor` for any value ``torch.load(weights_only=True)`` reads back (tensors, numbers,
    strings and dicts or lists of them); ``valid`` checks what was read, type included."""
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            try:
                v = torch.load(path, map_location="cpu", weights_only=True)
                if valid(v):
                    mark_used(path)
                    return cast(T, v)
            except Exception:  # a truncated or foreign file: recompute it
                pass
        value = compute()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)
        return value


ENTRY_SUFFIXES = (".npy", ".pt")


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    kind: str  # the folder under the cache root: images, features, zeroshot, ...
    size: int
    last_used: float  # the file's modification time, renewed on every hit


def mark_used(path: Path) -> None:
    """Record a hit on ``path`` for pruning by age (best effort: a read-only cache keeps its times)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def cache_entries(cache_dir: Path) -> list[CacheEntry]:
    """Every finished entry under ``cache_dir`` (temporary files being written and locks are not entries),
    least recently used first."""
    root = Path(cache_dir)
    found = []
    for path in root.rglob("*"):
        if path.suffix not in ENTRY_SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        try:
            st = path.stat()
        except OSError:  # removed meanwhile
            continue
        rel = path.relative_to(root).parts
        found.append(CacheEntry(path, rel[0] if len(rel) > 1 else "", st.st_size, st.st_mtime))
    return sorted(found, key=lambda e: (e.last_used, str(e.path)))


def prune_cache(
    cache_dir: Path,
    *,
    older_than_s: float | None = None,
    max_bytes: int | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> list[CacheEntry]:
    """Remove entries unused for ``older_than_s`` seconds, then the least recently used ones until the
    cache holds at most ``max_bytes``; return what was (with ``dry_run``: would be) removed."""
    now = time.time() if now is None else now
    entries = cache_entries(cache_dir)
    total = sum(e.size for e in entries)
    removed = []
    for e in entries:  # oldest first
        too_old = older_than_s is not None and now - e.last_used > older_than_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            continue
        if not dry_run:
            e.path.unlink(missing_ok=True)
        removed.append(e)
        total -= e.size
    return removed
