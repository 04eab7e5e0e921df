"""A job's report: one self-contained HTML page (header, results table, plotly charts; no network at view time).

Every string that comes from a user (job name, method and parameter names, errors) is HTML-escaped, in the
page and in chart labels (plotly renders a small HTML subset in labels and decodes entities for display).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from html import escape
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from autoft_service.search.space import space_distributions
from autoft_service.spec import SearchSpec
from autoft_service.store import JobRecord, TrialRecord
from workers.trial_config import LR_KEY

log = logging.getLogger(__name__)

NO_RESULTS = "no results yet"
CHART_HEIGHT = 420
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2rem 1rem; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
table.results { border-collapse: collapse; } table.results th, table.results td { padding: .3rem .7rem; }
table.results td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.results thead th { border-bottom: 2px solid #444; } table.results tbody tr:nth-child(even) { background: #f4f4f4; }
.note { color: #666; font-style: italic; } .error { color: #a00; white-space: pre-wrap; }
"""


def render_report(job: JobRecord, trials: list[TrialRecord]) -> str:
    """The job's report as one HTML page: a header (name, id, state, objective, best value and trial), the
    results table of the final stage in %, and three charts (optimization history, parameter importances,
    ID vs OOD accuracy), each in a ``<div class="chart">``. Works for a job with no trials or results."""
    metric, mode = _objective(job)
    metric_name = metric.split("/", 1)[-1]
    results = job.results if isinstance(job.results, dict) else {}
    rows = [r for r in results.get("results") or [] if isinstance(r, dict)]
    charts = {
        "history": ("Optimization history", lambda: history_figure(trials, metric, mode)),
        "importance": (
            "Parameter importances",
            lambda: importance_figure(trials, metric, mode, spec_distributions(job.spec)),
        ),
        "id-vs-ood": ("ID vs OOD", lambda: id_ood_figure(rows, results.get("pareto"), metric_name)),
    }
    sections = "\n".join(
        f'<section><h2>{title}</h2><div class="chart" id="{cid}">{_chart(make, f"{cid}-plot")}</div></section>'
        for cid, (title, make) in charts.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(job.name)}: AutoFT report</title>
<style>{_STYLE}</style>
<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>
<script type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
{_header(job, trials, results, metric, mode)}
<section><h2>Results: test {escape(metric_name)} (%)</h2>
{_results_table(rows, metric_name)}
</section>
{sections}
</body>
</html>
"""


# Header and table -------------------------------------------------------------------------------------------
def _objective(job: JobRecord) -> tuple[str, str]:
    objective = job.spec.get("objective") if isinstance(job.spec, dict) else None
    objective = objective if isinstance(objective, dict) else {}
    return str(objective.get("metric", "ood_val/accuracy")), str(objective.get("mode", "max"))


def _number(v: Any) -> float | None:
    """``v`` as a finite float, else ``None`` (booleans, strings, NaN and missing values)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _best_trial(trials: Iterable[TrialRecord], mode: str) -> TrialRecord | None:
    done = [t for t in trials if t.state == "completed" and _number(t.value) is not None]
    if not done:
        return None
    pick = max if mode == "max" else min
    return pick(done, key=lambda t: float(t.value))  # type: ignore[arg-type]


def _header(
    job: JobRecord, trials: list[TrialRecord], results: dict[str, Any], metric: str, mode: str
) -> str:
    best_value = _number(results.get("best_value"))
    best_trial = results.get("best_trial")
    if best_value is None:  # no final stage yet: the best finished trial so far
        best = _best_trial(trials, mode)
        best_value = _number(job.best_value) if best is None else float(best.value)  # type: ignore[arg-type]
        best_trial = None if best is None else best.number
    facts = {
        "job id": escape(job.id),
        "state": escape(job.state),
        "objective": f"{escape(mode)} {escape(metric)}",
        "best value": "–" if best_value is None else f"{best_value:.4f}",
        "best trial": "–" if best_trial is None else f"#{escape(str(best_trial))}",
        "trials": f"{job.trials_done} finished of {job.trials_total}",
    }
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts.items())
    error = f'<p class="error">{escape(job.error)}</p>' if job.error else ""
    return f'<header><h1>{escape(job.name)}</h1><dl class="meta">{rows}</dl>{error}</header>'


def result_columns(rows: list[dict[str, Any]], metric: str) -> list[tuple[str, str]]:
    """``(key, header)`` of the results table: ID test, OOD val, each OOD test set (first-seen order), mean."""
    prefix, suffix = "ood_test/", f"/{metric}"
    sets = dict.fromkeys(
        k[len(prefix) : -len(suffix)]
        for r in rows
        for k in r
        if k.startswith(prefix) and k.endswith(suffix) and len(k) > len(prefix) + len(suffix)
    )
    sets.pop("mean", None)
    return [
        (f"id_test/{metric}", "ID test"),
        (f"ood_val/{metric}", "OOD val"),
        *[(f"{prefix}{s}{suffix}", s) for s in sets],
        (f"{prefix}mean{suffix}", "OOD mean"),
    ]


def _results_table(rows: list[dict[str, Any]], metric: str) -> str:
    if not rows:
        return f'<p class="note">{NO_RESULTS}</p>'
    cols = result_columns(rows, metric)
    head = "<th>method</th>" + "".join(f"<th>{escape(h)}</th>" for _, h in cols)
    body = []
    for r in rows:
        cells = []
        for key, _ in cols:
            v = _number(r.get(key))
            cells.append(f'<td class="num">{"–" if v is None else f"{100 * v:.1f}"}</td>')
        body.append(f'<tr><th scope="row">{escape(str(r.get("method", "?")))}</th>{"".join(cells)}</tr>')
    return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


# Charts -----------------------------------------------------------------------------------------------------
class NothingToPlot(ValueError):
    """A chart has no data yet; the message says why (shown in its place)."""


def _chart(make: Callable[[], go.Figure], div_id: str) -> str:
    try:
        fig = make()
    except NothingToPlot as e:
        return f'<p class="note">{escape(str(e))}</p>'
    fig.update_layout(height=CHART_HEIGHT, margin={"t": 40, "r": 20})
    html: str = fig.to_html(
        full_html=False,
        include_plotlyjs=False,  # embedded once in <head>
        div_id=div_id,
        default_height=f"{CHART_HEIGHT}px",
        config={"displaylogo": False, "responsive": True},
    )
    return html


def history_figure(trials: list[TrialRecord], metric: str, mode: str) -> go.Figure:
    """Objective value of each completed trial by number, the running best, and pruned trials (their last
    reported value) as separate markers."""
    done = sorted(
        (t for t in trials if t.state == "completed" and _number(t.value) is not None), key=lambda t: t.number
    )
    pruned = sorted(
        (t for t in trials if t.state == "pruned" and _number(t.value) is not None), key=lambda t: t.number
    )
    if not done and not pruned:
        raise NothingToPlot("no finished trials yet")
    pick = max if mode == "max" else min
    running: list[float] = []
    for t in done:
        v = float(t.value)  # type: ignore[arg-type]
        running.append(pick(running[-1], v) if running else v)
    fig = go.Figure(
        [
            go.Scatter(
                x=[t.number for t in done], y=[t.value for t in done], mode="markers", name="completed",
                marker={"size": 9, "color": "#1f77b4"},
            ),
            go.Scatter(
                x=[t.number for t in done], y=running, mode="lines", line_shape="hv", name="best so far",
                line={"color": "#d62728"},
            ),
            go.Scatter(
                x=[t.number for t in pruned], y=[t.value for t in pruned], mode="markers",
                name="pruned (last reported)", marker={"size": 9, "symbol": "x", "color": "#999"},
            ),
        ]
    )  # fmt: skip
    fig.update_layout(xaxis_title="trial", yaxis_title=escape(metric), legend={"orientation": "h", "y": -0.2})
    return fig


def spec_distributions(spec: Any) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distributions the job's search space declares (empty when the stored spec has no
    parseable ``search`` section, e.g. a record written by an older version)."""
    search = spec.get("search", {}) if isinstance(spec, dict) else None
    if not isinstance(search, dict):
        return {}
    try:
        return space_distributions(SearchSpec.model_validate(search))
    except Exception as e:  # noqa: BLE001 - any unparseable or outdated spec: fall back to the observed values
        log.debug("report: search space of the stored spec not usable (%s); inferring distributions", e)
        return {}


def _observed_is_log_scale(name: str) -> bool:
    """Fallback without a spec: loss weights and the LR are searched log-uniformly."""
    return (name.startswith("loss/") and name.endswith("/weight")) or name == LR_KEY


def param_distribution(
    name: str, values: list[Any], declared: optuna.distributions.BaseDistribution | None = None
) -> optuna.distributions.BaseDistribution | None:
    """The parameter's distribution: as ``declared`` by the job's search space when it contains every value
    observed, otherwise inferred from the values (log-uniform for loss weights and the LR); ``None`` for a
    constant, which has no importance."""
    if len(set(map(repr, values))) < 2:
        return None
    if declared is not None and all(_contains(declared, v) for v in values):
        return declared
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return optuna.distributions.IntDistribution(min(values), max(values))
    if all(_number(v) is not None for v in values):
        lo, hi = float(min(values)), float(max(values))
        return optuna.distributions.FloatDistribution(lo, hi, log=_observed_is_log_scale(name) and lo > 0)
    return optuna.distributions.CategoricalDistribution(sorted(set(map(str, values))))


def _contains(dist: optuna.distributions.BaseDistribution, value: Any) -> bool:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    n = _number(value)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return isinstance(value, int) and dist.low <= value <= dist.high
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return n is not None and dist.low <= n <= dist.high
    return False


def param_importances(
    trials: list[TrialRecord],
    mode: str,
    declared: dict[str, optuna.distributions.BaseDistribution] | None = None,
) -> dict[str, float]:
    """fANOVA importances over the completed trials (an in-memory study rebuilt from the records), with the
    distributions ``declared`` by the job's search space (:func:`spec_distributions`) where it has them.

    ``ValueError`` with fewer than two completed trials or no parameter that varies.
    """
    done = [t for t in trials if t.state == "completed" and _number(t.value) is not None]
    if len(done) < 2:
        raise ValueError(f"needs at least 2 completed trials ({len(done)} so far)")
    observed: dict[str, list[Any]] = {}
    for t in done:
        for k, v in t.params.items():
            observed.setdefault(k, []).append(v)
    declared = declared or {}
    dists = {
        k: d for k, vs in observed.items() if (d := param_distribution(k, vs, declared.get(k))) is not None
    }
    if not dists:
        raise ValueError("no parameter varies across the completed trials")
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for t in done:
        params = {k: v for k, v in t.params.items() if k in dists}
        for k, v in params.items():
            if isinstance(dists[k], optuna.distributions.CategoricalDistribution):
                params[k] = str(v)
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=float(t.value),  # type: ignore[arg-type]
            )
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return {k: float(v) for k, v in importances.items()}


def importance_figure(
    trials: list[TrialRecord],
    metric: str,
    mode: str,
    declared: dict[str, optuna.distributions.BaseDistribution] | None = None,
) -> go.Figure:
    """Horizontal bars of the fANOVA importance of each parameter, the most important on top."""
    try:
        importances = param_importances(trials, mode, declared)
    except (ValueError, RuntimeError) as e:
        raise NothingToPlot(f"parameter importances skipped: {e}") from e
    if not importances:
        raise NothingToPlot("parameter importances skipped: no parameter shared by the completed trials")
    names = list(importances)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[importances[n] for n in names], y=[escape(n) for n in names], orientation="h", name="fANOVA"
        )
    )
    fig.update_layout(xaxis_title=f"importance for {escape(metric)} (fANOVA)", yaxis_automargin=True)
    return fig


def id_ood_figure(rows: list[dict[str, Any]], pareto: Any, metric: str) -> go.Figure:
    """One labelled point per method (ID test vs mean OOD test, in %), and the Pareto-front trials (ID val vs
    OOD val) of a multi-objective job: trial records carry only the objective value, not both metrics."""
    methods = [
        (str(r.get("method", "?")), x, y)
        for r in rows
        if (x := _number(r.get(f"id_test/{metric}"))) is not None
        and (y := _number(r.get(f"ood_test/mean/{metric}"))) is not None
    ]
    front = []
    for p in pareto if isinstance(pareto, list) else []:
        values = p.get("values") if isinstance(p, dict) else None
        if isinstance(values, dict):
            x, y = _number(values.get(f"id_val/{metric}")), _number(values.get(f"ood_val/{metric}"))
            if x is not None and y is not None:
                front.append((f"trial #{p.get('trial')}", x, y))
    if not methods and not front:
        raise NothingToPlot(NO_RESULTS)
    fig = go.Figure()
    for name, points, symbol in (
        ("methods (test)", methods, "circle"),
        ("Pareto trials (val)", front, "diamond"),
    ):
        if points:
            fig.add_trace(
                go.Scatter(
                    x=[100 * x for _, x, _ in points], y=[100 * y for _, _, y in points],
                    text=[escape(label) for label, _, _ in points], mode="markers+text",
                    textposition="top center", name=name, marker={"size": 11, "symbol": symbol},
                )
            )  # fmt: skip
    fig.update_layout(
        xaxis_title=f"ID {escape(metric)} (%)", yaxis_title=f"OOD {escape(metric)} (%)",
        legend={"orientation": "h", "y": -0.2}, showlegend=True,
    )  # fmt: skip
    return fig
