"""The study plots logged to MLflow: every plot of a study on one page with one copy of plotly.js."""

from __future__ import annotations

import optuna
from plotly.offline import get_plotlyjs

from autoft_service.plots import study_plots

PLOTLY_BANNER = get_plotlyjs()[:200]  # opens the bundle: one per embedded copy


def _study(directions: list[str]) -> optuna.Study:
    study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))
    dists = {
        "optim/lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "train/seed": optuna.distributions.IntDistribution(0, 10),
    }
    for i in range(6):
        params = {"optim/lr": 10 ** (-1 - i / 2), "train/seed": i}
        values = [0.5 + i / 20, 0.9 - i / 30][: len(directions)]
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=values))
    return study


def test_single_objective_plots_share_one_plotly_copy() -> None:
    pages = study_plots(_study(["maximize"]), ["ood_val/accuracy"])
    assert list(pages) == ["study"]
    html = pages["study"]
    assert html.count(PLOTLY_BANNER) == 1
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert f'id="{name}-plot"' in html, name
    assert html.count("Plotly.newPlot") == 3


def test_multi_objective_adds_the_pareto_front_on_the_same_page() -> None:
    html = study_plots(_study(["maximize", "maximize"]), ["ood_val/accuracy", "id_val/accuracy"])["study"]
    assert html.count(PLOTLY_BANNER) == 1 and 'id="pareto_front-plot"' in html
    assert html.count("Plotly.newPlot") == 4
