"""Fixed inputs of the job report (a job record, its trials, its results) and helpers that read the page.

Shared by the report's unit tests and its headless-browser integration test."""

from __future__ import annotations

from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from autoft_service.store import JobRecord, TrialRecord

T0 = datetime(2030, 1, 1, tzinfo=UTC)
CHART_IDS = ("history", "importance", "id-vs-ood")
SPEC = {
    "name": "digits-autoft",
    "objective": {"metric": "ood_val/accuracy", "mode": "max"},
    "search": {"lr": {"base": 3e-3, "relative_range": [0.01, 100.0]}},  # the range the trials below span
}

#: The final stage's results table (fractions); the expected cells in % are in ``EXPECTED_TABLE``.
RESULTS_ROWS: list[dict[str, Any]] = [
    {"method": "autoft", "id_test/accuracy": 0.926, "ood_val/accuracy": 0.92, "ood_test/blur/accuracy": 0.892,
     "ood_test/invert/accuracy": 0.625, "ood_test/mean/accuracy": 0.7585, "id_test/macro_f1": 0.5},
    {"method": "ft", "id_test/accuracy": 0.97, "ood_val/accuracy": 0.58, "ood_test/blur/accuracy": 0.874,
     "ood_test/invert/accuracy": 0.146, "ood_test/mean/accuracy": 0.51},
    {"method": "lp", "id_test/accuracy": 1.0, "ood_val/accuracy": 0.0504, "ood_test/blur/accuracy": 0.85,
     "ood_test/mean/accuracy": 0.85},  # no "invert" score: shown as a dash
]  # fmt: skip
EXPECTED_TABLE = [
    ["method", "ID test", "OOD val", "blur", "invert", "OOD mean"],
    ["autoft", "92.6", "92.0", "89.2", "62.5", "75.8"],
    ["ft", "97.0", "58.0", "87.4", "14.6", "51.0"],
    ["lp", "100.0", "5.0", "85.0", "–", "85.0"],
]
RESULTS = {"results": RESULTS_ROWS, "best_trial": 3, "best_value": 0.93, "best_params": {}, "pareto": []}

#: (number, state, value, params): four completed trials, two pruned, one still running.
TRIALS = [
    (0, "completed", 0.60, {"loss/ce/weight": 1.0, "loss/hinge/weight": 0.01, "optim/lr": 1e-3, "train/seed": 1}),
    (1, "completed", 0.70, {"loss/ce/weight": 1.0, "loss/hinge/weight": 2.0, "optim/lr": 3e-2, "train/seed": 4}),
    (2, "pruned", 0.40, {"loss/ce/weight": 1.0, "loss/hinge/weight": 0.2, "optim/lr": 1e-4, "train/seed": 7}),
    (3, "completed", 0.93, {"loss/ce/weight": 1.0, "loss/hinge/weight": 5.0, "optim/lr": 1e-2, "train/seed": 2}),
    (4, "pruned", 0.35, {"loss/ce/weight": 1.0, "loss/hinge/weight": 0.001, "optim/lr": 3e-4, "train/seed": 9}),
    (5, "completed", 0.80, {"loss/ce/weight": 1.0, "loss/hinge/weight": 0.5, "optim/lr": 5e-3, "train/seed": 0}),
    (6, "running", None, {"loss/ce/weight": 1.0, "loss/hinge/weight": 1.0, "optim/lr": 1e-3, "train/seed": 3}),
]  # fmt: skip


# Records --------------------------------------------------------------------------------------------------------
def job_record(**overrides: Any) -> JobRecord:
    """A job record as the store hands it out: a succeeded job with results, unless overridden."""
    fields: dict[str, Any] = {
        "id": "job123", "tenant": "acme", "name": "digits-autoft", "spec": SPEC, "state": "succeeded",
        "created_at": T0, "updated_at": T0, "started_at": T0, "finished_at": T0, "idempotency_key": None,
        "owner": None, "lease_expires_at": None, "attempts": 1, "cancel_requested": False,
        "trials_total": 7, "trials_done": 6, "best_value": 0.93, "best_params": {}, "results": RESULTS,
        "error": None, "mlflow_experiment_id": None, "mlflow_parent_run_id": None, "optuna_study_name": None,
        "extra_trials": 0, "retry_requests": [],
    }  # fmt: skip
    return JobRecord(**{**fields, **overrides})


def trial_records(job_id: str = "job123") -> list[TrialRecord]:
    return [
        TrialRecord(
            job_id=job_id,
            number=n,
            tune_trial_id=None,
            state=state,
            params=params,
            value=value,
            last_step=120,
            started_at=T0,
            finished_at=T0,
            mlflow_run_id=None,
            error=None,
        )  # fmt: skip
        for n, state, value, params in TRIALS
    ]


def queued_job() -> JobRecord:
    return job_record(state="queued", trials_done=0, best_value=None, results=None, started_at=None)


# Parsing the page -------------------------------------------------------------------------------------------
class _Tables(HTMLParser):
    """The text of each cell of the page's results table, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None
        self.in_table = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("class", "results") in attrs:
            self.in_table = True
        elif self.in_table and tag == "tr":
            self.rows.append([])
        elif self.in_table and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_table = False
        elif self.cell is not None and tag in ("td", "th"):
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table_cells(html: str) -> list[list[str]]:
    parser = _Tables()
    parser.feed(html)
    return parser.rows


def chart_div(html: str, chart_id: str) -> str:
    """The markup of one chart's section, from its ``<div class="chart">`` to the end of the section."""
    start = html.index(f'<div class="chart" id="{chart_id}">')
    return html[start : html.index("</section>", start)]
