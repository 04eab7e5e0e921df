"""The catalog: loss terms, tasks and metrics a job spec may name."""

from __future__ import annotations

import inspect
from functools import lru_cache

from fastapi import APIRouter, Depends

from autoft_service.api.auth import get_tenant
from autoft_service.api.errors_http import ERROR_RESPONSES
from autoft_service.api.schemas import Catalog, LossTermInfo, MetricInfo, TaskInfo

router = APIRouter(tags=["catalog"], responses=ERROR_RESPONSES)


@lru_cache(maxsize=1)
def build_catalog() -> Catalog:
    """Read the registries once (they only change when the process restarts)."""
    from workers.loss_terms import LOSS_TERMS
    from workers.metrics import METRICS
    from workers.tasks import list_tasks, resolve_task

    loss_terms = [
        LossTermInfo(name=n, summary=LOSS_TERMS.get(n).summary, kind=LOSS_TERMS.get(n).kind)
        for n in LOSS_TERMS
    ]
    tasks = []
    for name in list_tasks():
        task = resolve_task(name)
        tasks.append(TaskInfo(name=name, summary=task.summary, params_schema=task.Params.model_json_schema()))
    metrics = [MetricInfo(name=n, doc=inspect.getdoc(METRICS.get(n)) or "") for n in METRICS]
    return Catalog(loss_terms=loss_terms, tasks=tasks, metrics=metrics)


@router.get("/catalog", response_model=Catalog, dependencies=[Depends(get_tenant)])
def get_catalog() -> Catalog:
    """Registered loss terms, tasks (with their parameter schema) and metrics."""
    return build_catalog()
