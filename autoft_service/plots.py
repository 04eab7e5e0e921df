"""Optuna study plots as standalone HTML (plotly.js embedded: the MLflow UI works offline)."""

from __future__ import annotations

import logging
from typing import Any

import optuna

log = logging.getLogger(__name__)


def study_plots(study: optuna.Study, objectives: list[str]) -> dict[str, str]:
    """``{name: html}``: optimization history, parameter importances, parallel coordinates (of the primary
    objective) and, for a multi-objective study, the Pareto front."""
    from functools import partial

    from optuna import visualization as vis

    kw: dict[str, Any] = {}
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


def results_plot(rows: list[dict[str, Any]], metric: str) -> str:
    """Grouped bars per method: ID test, OOD val, each OOD test set and their mean (for one metric)."""
    import plotly.graph_objects as go

    tests = sorted(
        {k.split("/")[1] for r in rows for k in r if k.startswith("ood_test/") and k.endswith(f"/{metric}")}
    )
    cols = ["id_test", "ood_val", *[f"ood_test/{t}" for t in tests if t != "mean"], "ood_test/mean"]
    fig = go.Figure(
        [
            go.Bar(name=c, x=[r["method"] for r in rows], y=[r.get(f"{c}/{metric}") for r in rows])
            for c in cols
        ]
    )
    fig.update_layout(barmode="group", title=f"test {metric} by method", yaxis_title=metric)
    return fig.to_html(include_plotlyjs=True, full_html=True)
