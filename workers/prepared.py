"""A task prepared once per worker process: its data, pretrained weights, LP head and resident model.

:class:`~workers.contexts.WorkerContext` is what every Ray task or trial of a job gets to find its task and
its hardware; :func:`prepared_task` loads the task once per process (and task revision); :func:`build_model`
gives the model a run starts from.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from workers.accel import Accel
from workers.disk_cache import cached_tensor, cached_value
from workers.model import Classifier
from workers.tasks.base import OodAggregate, Task, TaskData
from workers.tasks.base import resolve_task as _resolve_task
from workers.training import (
    DEFAULT_PROBE_CS,
    ProbeFit,
    evaluate_task,
    extract_features,
    fresh_head,
    linear_probe,
)


@dataclass
class PreparedTask:
    """A task loaded once per worker process: data, pretrained weights and the starting head.

    The starting head is the task's own (``TaskData.init_head``, e.g. CLIP's zero-shot head) or a
    cross-validated logistic-regression probe on frozen ID-train features (:func:`linear_probe`).

    ``resident`` holds, per device, the one model this worker trains search trials in: it is reset in place
    to the pretrained weights at the start of every trial (:func:`build_model` with ``reuse=True``), so a
    trial neither re-reads the weights nor allocates a new model on the GPU."""

    data: TaskData
    lp_head: torch.nn.Linear
    #: How the starting head was chosen (``lp/C`` …); empty when the task supplied its own head.
    head_info: dict[str, float] = field(default_factory=dict)
    resident: dict[str, Classifier] = field(default_factory=dict)
    #: :func:`start_scores` by metrics and device, computed once per loaded task.
    start: dict[tuple[tuple[str, ...], str, str], dict[str, Any]] = field(default_factory=dict)


#: How many loaded tasks a process keeps (least recently used first out): a resident worker serves job
#: after job, and each new task or task revision would otherwise stay in its memory for good.
MAX_PREPARED = 3

_cache: OrderedDict[tuple[str, tuple[str, ...], str, str], PreparedTask] = OrderedDict()
_cache_lock = threading.Lock()


def prepared_task(
    task_name: str,
    task_params: Mapping[str, Any],
    cache_dir: str | Path,
    device: torch.device | None = None,
    *,
    data_roots: Sequence[str | Path] = (),
    ood_val_aggregate: OodAggregate = "mean",
    revision: str = "",
) -> PreparedTask:
    """Load (once per process) the task's data, backbone and linear-probe head; later calls are free.

    The frozen ID-train features the LP head is fitted on are cached on disk (keyed by the task and a
    fingerprint of the pretrained weights), and so is the cross-validated head fitted on them
    (:func:`cached_linear_probe`), so only the first worker on a machine runs the backbone over the training
    set and the CV; ``device`` is where that extraction runs (fp32). ``data_roots`` are the folders the
    task may read user files from; ``ood_val_aggregate`` how named OOD val sets are scored (the data and head
    are shared between aggregates); ``revision`` which version of the task's files to use (see
    :meth:`~workers.tasks.base.Task.revision`): a loaded task of another revision is dropped and reloaded.
    The process keeps the :data:`MAX_PREPARED` most recently used tasks."""
    roots = tuple(str(r) for r in data_roots)
    key = repr((task_name, sorted(task_params.items()), str(cache_dir)))  # also names the on-disk features
    entry = (key, roots, revision, ood_val_aggregate)
    with _cache_lock:
        if entry in _cache:
            _cache.move_to_end(entry)
            return _cache[entry]
        for old in [e for e in _cache if e[:2] == (key, roots) and e[2] != revision]:
            del _cache[old]  # the files changed since that load
        base = next((p for e, p in _cache.items() if e[:3] == entry[:3]), None)
        if base is not None:
            data = replace(base.data, ood_val_aggregate=ood_val_aggregate)
            _cache[entry] = PreparedTask(data, base.lp_head, base.head_info)
        else:
            task: Task = _resolve_task(task_name).create(dict(task_params), Path(cache_dir), data_roots=roots)
            data = replace(task.load(), ood_val_aggregate=ood_val_aggregate)
            info: dict[str, float] = {}
            if data.init_head is not None:  # the task's own starting head (e.g. CLIP zero-shot)
                head = data.init_head
            else:
                feats = frozen_train_features(data, Path(cache_dir), key, device or torch.device("cpu"))
                fit = cached_linear_probe(data, feats, Path(cache_dir))
                head, info = fit.head, fit.info()
            _cache[entry] = PreparedTask(data=data, lp_head=head, head_info=info)
        while len(_cache) > MAX_PREPARED:
            _cache.popitem(last=False)
        return _cache[entry]


def clear_prepared() -> None:
    """Forget the tasks this process loaded: the next :func:`prepared_task` reloads from the disk cache."""
    with _cache_lock:
        _cache.clear()


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (names, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def frozen_train_features(
    data: TaskData, cache_dir: Path, task_key: str, device: torch.device
) -> torch.Tensor:
    """The pretrained backbone's features of ID train, computed once per machine and cached on disk.

    Concurrent workers take a file lock, so one computes while the others wait and then read."""
    digest = hashlib.sha256(f"{task_key}|{weights_fingerprint(data.backbone)}".encode()).hexdigest()[:24]

    def compute() -> torch.Tensor:
        backbone = copy.deepcopy(data.backbone).to(device)
        return extract_features(backbone, data.id_train.x, device)

    return cached_tensor(
        cache_dir / "features" / f"{digest}.pt",
        compute,
        valid=lambda t: t.shape == (len(data.id_train), data.feature_dim),
    )


#: Bump when :func:`linear_probe`'s fit changes, so cached heads from an older fit are not reused.
PROBE_VERSION = 1


def cached_linear_probe(data: TaskData, feats: torch.Tensor, cache_dir: Path) -> ProbeFit:
    """:func:`linear_probe` on the frozen ID-train features, fitted once per machine and cached on disk:
    the cross-validation costs seconds, and every worker process of every job starts from this head.

    The entry is keyed by the features' and labels' bytes and the probe's settings, so a new backbone, a
    new split or a new C grid is a miss; an entry that does not fit the task is refitted."""
    y = data.id_train.y.cpu()
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((PROBE_VERSION, DEFAULT_PROBE_CS, data.num_classes, tuple(feats.shape))).encode())
    for t in (feats.float(), y):
        h.update(_tensor_bytes(t))
    path = cache_dir / "probes" / f"{h.hexdigest()}.pt"
    shape = (data.num_classes, data.feature_dim)

    def compute() -> dict[str, Any]:
        fit = linear_probe(
            data.backbone, data.id_train, data.feature_dim, data.num_classes,
            device=torch.device("cpu"), features=feats,
        )  # fmt: skip
        return {
            "weight": fit.head.weight.detach().cpu(), "bias": fit.head.bias.detach().cpu(),
            "C": fit.C, "folds": fit.folds, "cv": [[c, v] for c, v in fit.cv.items()],
        }  # fmt: skip

    def valid(v: Any) -> bool:
        return (
            isinstance(v, dict)
            and isinstance(v.get("weight"), torch.Tensor)
            and tuple(v["weight"].shape) == shape
            and isinstance(v.get("bias"), torch.Tensor)
            and tuple(v["bias"].shape) == shape[:1]
        )

    v = cached_value(path, compute, valid)
    head = torch.nn.Linear(data.feature_dim, data.num_classes)
    with torch.no_grad():
        head.weight.copy_(v["weight"])
        head.bias.copy_(v["bias"])
    return ProbeFit(head, float(v["C"]), {float(c): float(a) for c, a in v["cv"]}, int(v["folds"]))


def score_start(prepared: PreparedTask, accel: Accel, metrics: Sequence[str]) -> dict[str, Any]:
    """The starting model (pretrained backbone + starting head) on every split, how its head was chosen,
    and the size of OOD val behind one ``ood_val`` score (the binomial standard error's ``n``: the pooled
    size for the mean over sets, the smallest set for the worst)."""
    data = prepared.data
    model = build_model(prepared, "lp", 0, accel.device, accel=accel)
    scores = evaluate_task(model, data, None, metrics, accel.device, accel=accel)
    sizes = [len(s) for s in data.ood_val_sets.values()] or [len(data.ood_val)]
    n = min(sizes) if data.ood_val_aggregate == "worst" else sum(sizes)
    return {"metrics": scores, "ood_val_size": n, "head": dict(prepared.head_info)}


def start_scores(prepared: PreparedTask, accel: Accel, metrics: Sequence[str]) -> dict[str, Any]:
    """:func:`score_start`, computed once per loaded task, metrics and hardware path (a deterministic
    evaluation of the same weights on the same data: a resident worker answers every later job from it)."""
    key = (tuple(metrics), str(accel.device), accel.precision)
    if key not in prepared.start:
        prepared.start[key] = score_start(prepared, accel, metrics)
    return copy.deepcopy(prepared.start[key])


def device_for(use_gpu: bool) -> torch.device:
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def build_model(
    prepared: PreparedTask,
    head: str,
    seed: int,
    device: torch.device,
    *,
    accel: Accel | None = None,
    reuse: bool = False,
) -> Classifier:
    """The pretrained backbone with the LP head (``head="lp"``) or a random one, on the device.

    By default a fresh copy. With ``reuse`` the worker's resident model for this device is reset in place
    (weights, buffers and ``requires_grad`` copied from the pristine backbone, gradients dropped, a new
    head): only for callers that are done with the previous model, i.e. one search trial after another."""
    accel = accel or Accel(device)
    data = prepared.data
    h = (
        copy.deepcopy(prepared.lp_head)
        if head == "lp"
        else fresh_head(data.feature_dim, data.num_classes, seed)
    )
    if not reuse:
        return accel.place(Classifier(copy.deepcopy(data.backbone), h))
    resident = prepared.resident.get(str(device))
    if resident is None:
        resident = prepared.resident[str(device)] = accel.place(Classifier(copy.deepcopy(data.backbone), h))
        return resident
    model = resident
    reset_in_place(model.backbone, data.backbone)
    model.head = accel.place(h)
    model.train()
    return model


@torch.no_grad()
def reset_in_place(work: torch.nn.Module, pristine: torch.nn.Module) -> None:
    """Copy ``pristine``'s parameters, buffers and ``requires_grad`` flags into ``work`` (same structure)."""
    for (n, p), (n0, p0) in zip(work.named_parameters(), pristine.named_parameters(), strict=True):
        if n != n0:
            raise ValueError(f"resident model out of sync with the pretrained one: {n} != {n0}")
        p.copy_(p0)
        p.requires_grad_(p0.requires_grad)
        p.grad = None
    for (_, b), (_, b0) in zip(work.named_buffers(), pristine.named_buffers(), strict=True):
        b.copy_(b0)
