"""The task contract: what a fine-tuning problem must provide to be searched.

A task yields a pretrained backbone (inputs → features), the number of classes, the ID splits (train / val /
test), one OOD validation split and any number of named OOD test splits. It may do expensive one-time work
(pretraining, decoding, caching) in :meth:`Task.prepare`, which the driver calls once before any trial
starts; :meth:`Task.load` is then called in each worker process and must be cheap and side-effect free.

Register a built-in task with ``@register_task("name")``; external packages expose a ``Task`` subclass in
the ``autoft.tasks`` entry-point group; the local CLI also accepts a ``module:attribute`` reference.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from workers.contexts import OodAggregate
from workers.errors import UnknownTask, invalid_spec_from
from workers.registry import Registry


@dataclass(frozen=True)
class Split:
    """An in-memory labelled split. ``groups`` (optional) labels sub-populations for worst-group metrics."""

    x: torch.Tensor
    y: torch.Tensor
    groups: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")
        if self.groups is not None and len(self.groups) != len(self.y):
            raise ValueError("groups must have one entry per example")

    def __len__(self) -> int:
        return len(self.y)


#: How several named OOD val sets make one ``ood_val/<metric>`` score: their mean, or the worst of them.


def pooled(splits: Sequence[Split]) -> Split:
    """The union of several splits (groups kept only when every split has them)."""
    groups = [s.groups for s in splits]
    return Split(
        torch.cat([s.x for s in splits]),
        torch.cat([s.y for s in splits]),
        None if any(g is None for g in groups) else torch.cat([g for g in groups if g is not None]),
    )


@dataclass
class TaskData:
    """What :meth:`Task.load` returns. ``backbone`` holds the pretrained weights and maps x → features."""

    backbone: nn.Module
    feature_dim: int
    num_classes: int
    id_train: Split
    id_val: Split
    id_test: Split
    ood_val: Split
    ood_tests: dict[str, Split] = field(default_factory=dict)
    #: A task-provided starting head (e.g. CLIP's zero-shot head), used wherever a run starts "from the LP
    #: head"; ``None``: the head is fitted by linear probing on frozen ID-train features.
    init_head: nn.Linear | None = None
    #: Dual-encoder tasks: one tokenised caption per class ``[num_classes, seq_len]`` (FLYP's contract).
    class_text_tokens: torch.Tensor | None = None
    #: Class names, in label order (for reports; optional).
    class_names: list[str] | None = None
    #: Several named OOD validation sets (e.g. one per shift). When given, ``ood_val`` is their union (see
    #: :func:`pooled`), each set is scored as ``ood_val/<name>/<metric>`` and ``ood_val/<metric>`` is their
    #: ``ood_val_aggregate`` (mean or worst), so the objective sees every shift and not the largest one.
    ood_val_sets: dict[str, Split] = field(default_factory=dict)
    ood_val_aggregate: OodAggregate = "mean"

    def __post_init__(self) -> None:
        for name in self.ood_val_sets:
            if not name or "/" in name or name == "mean":
                raise ValueError(f"OOD val set name {name!r} must be non-empty, without '/', not 'mean'")

    def splits(self) -> dict[str, Split]:
        """Every split by its metric prefix: id_val, ood_val, ood_val/<set>, id_test, ood_test/<name>."""
        out = {"id_val": self.id_val, "ood_val": self.ood_val, "id_test": self.id_test}
        out.update({f"ood_val/{k}": v for k, v in self.ood_val_sets.items()})
        out.update({f"ood_test/{k}": v for k, v in self.ood_tests.items()})
        return out

    def expand(self, names: Sequence[str] | None = None) -> dict[str, Split]:
        """The splits to score for ``names`` (default: every split): with named OOD val sets, ``ood_val``
        stands for the sets (its score is their aggregate, see :func:`workers.training.evaluate_task`)."""
        available = self.splits()
        out: dict[str, Split] = {}
        for n in available if names is None else names:
            if n == "ood_val" and self.ood_val_sets:
                out.update({f"ood_val/{k}": v for k, v in self.ood_val_sets.items()})
            else:
                out[n] = available[n]
        return out


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Task(ABC):
    """Base class of every task. Subclasses set ``Params`` (a strict pydantic model) and implement ``load``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Metrics reported on every split; the objective metric must be one of the registered metrics.
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "worst_group_accuracy")
    #: Whether the model has a text tower (CLIP-like dual encoder), which contrastive (FLYP) methods need.
    has_text_tower: ClassVar[bool] = False

    def __init__(self, params: BaseModel, cache_dir: Path) -> None:
        self.params = params
        self.cache_dir = Path(cache_dir)

    #: The folders this task may read user files from (weights, datasets, manifests), given by the caller
    #: of :meth:`create`; never read from the environment.
    data_roots: tuple[Path, ...] = ()

    @classmethod
    def validate_params(
        cls, raw: dict[str, Any], *, field: str = "task.params", data_roots: Sequence[str | Path] = ()
    ) -> BaseModel:
        """Validate raw parameters; raise ``InvalidSpec`` naming the parameter at fault.

        ``data_roots`` reaches the ``Params`` validators as ``info.context["data_roots"]`` (a tuple of
        ``Path``), so a task that names files checks them against the roots at submission."""
        try:
            return cls.Params.model_validate(raw, context={"data_roots": _roots(data_roots)})
        except ValidationError as e:
            raise invalid_spec_from(e, field) from None

    @classmethod
    def supports_text_tower(cls, params: BaseModel) -> bool:
        """Whether the model these (validated) params describe has a text tower; default ``has_text_tower``."""
        return cls.has_text_tower

    @classmethod
    def create(
        cls, raw_params: dict[str, Any], cache_dir: Path, *, data_roots: Sequence[str | Path] = ()
    ) -> Task:
        """A task from raw parameters (validated against ``data_roots``), reading files only inside them."""
        roots = _roots(data_roots)
        task = cls(cls.validate_params(raw_params, data_roots=roots), cache_dir)
        task.data_roots = roots
        return task

    @classmethod
    def example_params(cls, root: Path) -> dict[str, Any]:
        """Valid, fast parameters on tiny data this writes under the data root ``root``.

        The task conformance suite (``tests/unit/test_task_conformance.py``) creates, loads and trains
        every registered task from these, so a new task is checked without touching the tests.
        """
        raise NotImplementedError(f"task {cls.__name__} defines no example_params(root)")

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """One-time, cached, expensive work (e.g. pretraining). Called once in the driver."""

    def revision(self) -> str | None:
        """A version of everything :meth:`load` reads, when the task can tell it cheaply; ``None`` (the
        default): unknown, the files may have changed since the last job.

        Resident worker processes keep a loaded task across jobs only while this is the same string;
        with ``None`` each job loads the task again (once per worker process), so a job never trains on
        data that changed after an earlier job loaded it."""
        return None

    @abstractmethod
    def load(self) -> TaskData:
        """Build the task's data and pretrained backbone. Cheap after :meth:`prepare`."""


def _roots(data_roots: Sequence[str | Path]) -> tuple[Path, ...]:
    if isinstance(data_roots, (str, Path)):  # one root given bare: never iterate a string's characters
        data_roots = [data_roots]
    return tuple(Path(r) for r in data_roots)


TASKS: Registry[type[Task]] = Registry("task", UnknownTask)


#: Class decorator registering a :class:`Task` under ``name`` (:meth:`Registry.register`).
register_task = TASKS.register


def _load_entry_points() -> None:
    for ep in entry_points(group="autoft.tasks"):
        if ep.name in TASKS:
            continue
        try:
            obj = ep.load()
        except Exception:  # a broken plug-in must not take the service down
            continue
        if isinstance(obj, type) and issubclass(obj, Task):
            if not obj.name:
                obj.name = ep.name
            TASKS.add(ep.name, obj)


def resolve_task(name: str, *, field: str = "task.name") -> type[Task]:
    """Resolve a task name: the registry, then ``autoft.tasks`` entry points, then ``module:attribute``."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise UnknownTask(f"cannot import task {name!r}: {e}", field=field) from None
        if not (isinstance(obj, type) and issubclass(obj, Task)):
            raise UnknownTask(f"{name!r} is not a Task subclass", field=field)
        if not obj.name:
            obj.name = name
        return obj
    if name not in TASKS:
        _load_entry_points()
    return TASKS.get(name, field=field)


def list_tasks() -> list[str]:
    _load_entry_points()
    return TASKS.names()
