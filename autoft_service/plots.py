"""Optuna study plots as standalone HTML (plotly.js embedded: the MLflow UI works offline)."""

from __future__ import annotations

import logging

import optuna

log = logging.getLogger(__name__)


def study_plots(study: optuna.Study) -> dict[str, str]:
    """``{name: html}`` for optimization history, parameter importances and parallel coordinates."""
    from optuna import visualization as vis

    makers = {
        "optimization_history": vis.plot_optimization_history,
        "param_importances": vis.plot_param_importances,
        "parallel_coordinate": vis.plot_parallel_coordinate,
    }
    out: dict[str, str] = {}
    for name, make in makers.items():
        try:
            out[name] = make(study).to_html(include_plotlyjs=True, full_html=True)
        except (ValueError, RuntimeError) as e:  # e.g. importances need >= 2 completed trials
            log.warning("plot %s skipped: %s", name, e)
    return out
