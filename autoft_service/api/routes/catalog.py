"""The catalog: loss terms, tasks, metrics and fine-tuning methods a job spec may name."""

from __future__ import annotations

import inspect
from functools import lru_cache

from fastapi import APIRouter, Depends

from autoft_service.api.auth import tenant_dependency
from autoft_service.api.errors_http import ERROR_RESPONSES
from autoft_service.api.schemas import (
    Catalog,
    FTMethodInfo,
    LossTermInfo,
    MetricInfo,
    SearchRangeInfo,
    TaskInfo,
)

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
    return Catalog(loss_terms=loss_terms, tasks=tasks, metrics=metrics, ft_methods=ft_methods())


#: Methods that are a post-hoc step or a different model head, never a searched training method (the
#: same rule as ``autoft_service.spec.validate_spec``, with FLYP's text tower).
NOT_SEARCHABLE = ("wise_ft", "lp")


def ft_methods() -> list[FTMethodInfo]:
    """Every registered fine-tuning method, with whether ``search.methods`` may list it."""
    from workers.ft_methods import FT_METHODS, create_method

    out = []
    for name in FT_METHODS.names():
        cls = FT_METHODS.get(name)
        space = create_method(name, {}).search_space()
        out.append(
            FTMethodInfo(
                name=name, summary=cls.summary, paper=cls.paper,
                searchable=not cls.requires_text_tower and name not in NOT_SEARCHABLE,
                requires_text_tower=cls.requires_text_tower,
                params_schema=cls.Params.model_json_schema(),
                search_space={k: SearchRangeInfo(**vars(r)) for k, r in space.items()},
            )
        )  # fmt: skip
    return out


@router.get("/catalog", response_model=Catalog, dependencies=[Depends(tenant_dependency)])
def get_catalog() -> Catalog:
    """Registered loss terms, tasks (with their parameter schema), metrics and fine-tuning methods."""
    return build_catalog()
