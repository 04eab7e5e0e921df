"""Optuna study plots as standalone HTML (plotly.js embedded: the MLflow UI works offline)."""

from __future__ import annotations

import logging

import optuna

log = logging.getLogger(__name__)


def study_plots(study: optuna.Study, objectives: list[str]) -> dict[str, str]:
    """``{name: html}``: optimization history, parameter importances, parallel coordinates (of the primary
    objective) and, for a multi-objective study, the Pareto front."""
    from functools import partial

    from optuna import visualization as vis

    kw = {}
    if len(objectives) > 1:
        kw = {"target": lambda t: t.values[0], "target_name": objectives[0]}
    makers = {
        "optimization_history": partial(vis.plot_optimization_history, **kw),
        "param_importances": partial(vis.plot_param_importances, **kw),
        "parallel_coordinate": partial(vis.plot_parallel_coordinate, **kw),
    }
    if len(objectives) > 1:
        makers["pareto_front"] = partial(vis.plot_pareto_front, target_names=objectives)
    out: dict[str, str] = {}
    for name, make in makers.items():
        try:
            out[name] = make(study).to_html(include_plotlyjs=True, full_html=True)
        except (ValueError, RuntimeError) as e:  # e.g. importances need >= 2 completed trials
            log.warning("plot %s skipped: %s", name, e)
    return out
