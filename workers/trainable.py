"""What runs inside a trial: a short fine-tune from the pretrained weights, scored on OOD validation.

The trainable receives a validated :class:`TrialContext` (never the environment) plus the sampled config
(``loss/<term>/weight``, ``optim/lr``, ``optim/weight_decay``, ``train/seed``). It reports after every
``eval_every`` inner steps, so an ASHA scheduler sees each rung; the reported ``step`` is the scheduler's
time attribute.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from workers.model import Classifier
from workers.objective import Objective, snapshot_params
from workers.tasks.base import Task, TaskData
from workers.tasks.base import resolve_task as _resolve_task
from workers.training import fine_tune, fresh_head, linear_probe, seed_everything


class TrialContext(BaseModel):
    """The fixed part of every trial of one job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_name: str
    task_params: dict[str, Any]
    cache_dir: str
    inner_steps: int
    eval_every: int
    batch_size: int
    metrics: tuple[str, ...]
    use_gpu: bool = False
    cpu_threads: int = 1


@dataclass
class PreparedTask:
    """A task loaded once per worker process: data, pretrained weights and the LP head."""

    data: TaskData
    lp_head: torch.nn.Linear


_cache: dict[str, PreparedTask] = {}
_cache_lock = threading.Lock()


def prepared_task(task_name: str, task_params: Mapping[str, Any], cache_dir: str | Path) -> PreparedTask:
    """Load (once per process) the task's data, backbone and linear-probe head; later calls are free."""
    key = repr((task_name, sorted(task_params.items()), str(cache_dir)))
    with _cache_lock:
        if key not in _cache:
            task: Task = _resolve_task(task_name).create(dict(task_params), Path(cache_dir))
            data = task.load()
            head = linear_probe(
                data.backbone, data.id_train, data.feature_dim, data.num_classes, device=torch.device("cpu")
            )
            _cache[key] = PreparedTask(data=data, lp_head=head)
        return _cache[key]


def device_for(use_gpu: bool) -> torch.device:
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def split_config(config: Mapping[str, Any]) -> tuple[dict[str, float], float, float, int]:
    """Flattened trial config → (loss weights by term, lr, weight decay, seed)."""
    flat = flatten_config(config)
    weights = {k.split("/")[1]: float(v) for k, v in flat.items() if k.startswith("loss/")}
    return weights, float(flat["optim/lr"]), float(flat["optim/weight_decay"]), int(flat["train/seed"])


def method_config(config: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """Flattened trial config → (searched training method or None for plain AdamW, its parameters).

    ``method/name`` picks the method; ``method/<name>/<param>`` are its hyperparameters, where a dotted
    param (``lr_multipliers.group0``) is nested back into a dict.
    """
    flat = flatten_config(config)
    name = flat.get("method/name")
    if name is None or name == "adamw":
        return None, {}
    params: dict[str, Any] = {}
    prefix = f"method/{name}/"
    for k, v in flat.items():
        if k.startswith(prefix):
            head, _, sub = k[len(prefix) :].partition(".")
            if sub:
                params.setdefault(head, {})[sub] = v
            else:
                params[head] = v
    return str(name), params


def flatten_config(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Tune's nested config → ``{"loss/ce/weight": ..., "optim/lr": ...}`` (keys joined with "/")."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_config(v, key + "/"))
        else:
            out[key] = v
    return out


def build_model(prepared: PreparedTask, head: str, seed: int, device: torch.device) -> Classifier:
    """A fresh copy of the pretrained backbone with the LP head (``head="lp"``) or a random one."""
    data = prepared.data
    h = (
        copy.deepcopy(prepared.lp_head)
        if head == "lp"
        else fresh_head(data.feature_dim, data.num_classes, seed)
    )
    return Classifier(copy.deepcopy(data.backbone), h).to(device)


def run_objective(
    prepared: PreparedTask,
    weights: dict[str, float],
    lr: float,
    weight_decay: float,
    seed: int,
    *,
    steps: int,
    batch_size: int,
    eval_every: int,
    metrics: tuple[str, ...],
    device: torch.device,
    on_eval: Callable[[int, dict[str, float]], None] | None = None,
    head: str = "lp",
    eval_splits: tuple[str, ...] = ("id_val", "ood_val"),
    method: str | None = None,
    method_params: Mapping[str, Any] | None = None,
) -> Classifier:
    """Fine-tune a fresh pretrained model with one objective; return the trained model.

    With ``method`` (a registered fine-tuning method the search picked), that method's optimizer,
    projections and extra terms run on top of the searched objective, from the same head."""
    if method is not None:
        from workers.ft_methods import create_method, train_with_method

        params = dict(method_params or {})
        m = create_method(method, params)
        if "head_init" in type(m.params).model_fields:
            m = create_method(method, {**params, "head_init": head})
        return train_with_method(
            m, prepared, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
            device=device, metrics=metrics, loss_weights=weights, eval_every=eval_every,
            eval_splits=eval_splits, on_eval=on_eval,
        ).model  # fmt: skip
    g = seed_everything(seed)
    model = build_model(prepared, head, seed, device)
    init = snapshot_params(model)
    objective = Objective(weights, model, init)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    fine_tune(
        model, prepared.data, objective, optimizer,
        steps=steps, batch_size=batch_size, generator=g, device=device,
        eval_every=eval_every, eval_splits=eval_splits, metrics=metrics, on_eval=on_eval,
    )  # fmt: skip
    return model


def autoft_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable for one AutoFT trial."""
    from ray import tune

    torch.set_num_threads(max(1, ctx.cpu_threads))
    prepared = prepared_task(ctx.task_name, ctx.task_params, ctx.cache_dir)
    weights, lr, wd, seed = split_config(config)
    method, method_params = method_config(config)

    def report(step: int, metrics: dict[str, float]) -> None:
        tune.report({**metrics, "step": step})

    run_objective(
        prepared, weights, lr, wd, seed,
        steps=ctx.inner_steps, batch_size=ctx.batch_size, eval_every=ctx.eval_every,
        metrics=ctx.metrics, device=device_for(ctx.use_gpu), on_eval=report,
        method=method, method_params=method_params,
    )  # fmt: skip
