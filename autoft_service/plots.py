"""Optuna study plots as standalone HTML pages for MLflow (plotly.js embedded: the MLflow UI works offline).

A page embeds plotly.js once however many plots it holds: the study's plots share one ``study`` page.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from html import escape
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

#: Titles of the study plots, in page order.
STUDY_PLOT_TITLES = {
    "optimization_history": "Optimization history",
    "param_importances": "Parameter importances",
    "parallel_coordinate": "Parallel coordinates",
    "pareto_front": "Pareto front",
}


def figures_page(title: str, figures: Mapping[str, go.Figure]) -> str:
    """One standalone HTML page with every figure (``{section id: figure}``) and one copy of plotly.js."""
    from plotly.offline import get_plotlyjs

    sections = "\n".join(
        f'<section id="{escape(name)}"><h2>{escape(STUDY_PLOT_TITLES.get(name, name))}</h2>'
        + fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{escape(name)}-plot")
        + "</section>"
        for name, fig in figures.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body style="font-family: system-ui, sans-serif">
<h1>{escape(title)}</h1>
{sections}
</body>
</html>
"""


def study_figures(study: optuna.Study, objectives: list[str]) -> dict[str, go.Figure]:
    """Optimization history, parameter importances, parallel coordinates (of the primary objective) and,
    for a multi-objective study, the Pareto front; a plot the study cannot draw yet is left out."""
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
    out: dict[str, go.Figure] = {}
    for name, make in makers.items():
        try:
            out[name] = make(study)
        except (ValueError, RuntimeError) as e:  # e.g. importances need >= 2 completed trials
            log.warning("plot %s skipped: %s", name, e)
    return out


def study_plots(study: optuna.Study, objectives: list[str]) -> dict[str, str]:
    """``{name: html}`` of the study's MLflow pages: one ``study`` page with every plot of
    :func:`study_figures` and a single copy of plotly.js (empty when there is nothing to draw)."""
    figures = study_figures(study, objectives)
    if not figures:
        return {}
    return {"study": figures_page(f"Study {study.study_name}", figures)}


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
