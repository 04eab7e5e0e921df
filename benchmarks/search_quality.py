"""Search quality on the demo task: the row the service selects against tuned FT, LP and LP-FT, over seeds.

Each seed is a whole job (search + final stage); the seed drives the TPE sampler and the downstream data
split. Two configurations of the demo, so no single setting is tuned to: ``demo`` (OOD val = noise +
occlusion, the shipped spec) and ``occlusion`` (OOD val = occlusion alone). Prints, per configuration, one
table of test accuracy in percent, mean ± 95% confidence interval (Student t over seeds); the row
``selected`` is whichever AutoFT row (autoft, autoft_wise_ft, autoft_soup) the job selected on OOD val, and
the verdict lines compare it with every baseline. ``--asha both`` also runs every job without early stopping
and prints the trial steps each used.

    python -m benchmarks.search_quality [--seeds 0 1 2 3 4] [--configs demo occlusion] [--asha on|off|both]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from rich.table import Table

from autoft_service.engine import Engine
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from benchmarks._common import demo_spec_dict, mean_ci

#: Every registered method that runs on the demo CNN (FLYP needs a text tower), WiSE-FT over FT and LP-FT.
ALL_METHODS = [
    "ft", "lp", "lp_ft", "l2_sp", "delta", "tpgm", "ftp", "spd", "layerwise",
    {"name": "wise_ft", "params": {"base": "ft"}, "label": "wise_ft-ft"},
    {"name": "wise_ft", "params": {"base": "lp_ft"}, "label": "wise_ft-lp_ft"},
]  # fmt: skip

#: Task-parameter overrides of each benchmark configuration.
CONFIGS: dict[str, dict[str, Any]] = {
    "demo": {},
    "occlusion": {"ood_val_shift": "occlusion"},
}
AUTOFT_ROWS = ("autoft", "autoft_wise_ft", "autoft_soup")


def trial_steps(settings: Settings, job_id: str, eval_every: int) -> int:
    """Inner steps the job's trials trained: each trial's report count (Optuna keys its intermediate values
    by report) times the report cadence."""
    study = optuna.load_study(study_name=f"autoft-{job_id}", storage=settings.optuna_url)
    return sum(len(t.intermediate_values) * eval_every for t in study.trials)


def run_config(
    settings: Settings, name: str, seeds: list[int], args: argparse.Namespace, asha: bool
) -> tuple[dict[str, dict[str, list[float]]], list[float], list[float]]:
    rows: dict[str, dict[str, list[float]]] = {}
    times: list[float] = []
    steps: list[float] = []
    for seed in seeds:
        d = demo_spec_dict()
        d["name"] = f"bench-{name}-s{seed}"
        d["search"]["sampler"]["seed"] = seed
        d["task"]["params"].update({"split_seed": seed, **CONFIGS[name]})
        if args.trials:
            d["budget"]["trials"] = args.trials
        if not asha:
            d["budget"]["early_stopping"] = {"type": "none"}
        d["final"]["register_model"] = False
        if args.all_methods:
            d["final"]["baselines"] = ALL_METHODS
        t0 = time.time()
        job_id = f"{name}-{seed}-{'asha' if asha else 'full'}-{int(t0)}"
        result = Engine(settings).run(parse_spec(d), job_id=job_id)
        times.append(time.time() - t0)
        b = d["budget"]
        steps.append(trial_steps(settings, job_id, b["eval_every"]) / (b["trials"] * b["inner_steps"]))
        for r in result.results:
            names = [r["method"], *(["selected"] if r.get("selected") else [])]
            for method in names:
                acc = rows.setdefault(method, {"id": [], "ood_val": [], "ood": []})
                acc["id"].append(r["id_test/accuracy"])
                acc["ood_val"].append(r["ood_val/accuracy"])
                acc["ood"].append(r["ood_test/mean/accuracy"])
    return rows, times, steps


def print_table(console: Console, title: str, rows: dict[str, dict[str, list[float]]]) -> None:
    table = Table(title=title)
    for col in ("method", "ID test", "OOD val", "OOD test (mean of 5 shifts)"):
        table.add_column(col, justify="right" if col != "method" else "left")
    order = ["selected", *AUTOFT_ROWS, *(m for m in rows if m not in ("selected", *AUTOFT_ROWS))]
    for method in [m for m in order if m in rows]:
        acc = rows[method]
        table.add_row(method, mean_ci(acc["id"]), mean_ci(acc["ood_val"]), mean_ci(acc["ood"]))
    console.print(table)
    if "selected" not in rows:
        return
    sel = rows["selected"]
    mean = statistics.mean
    baselines = [m for m in rows if m not in ("selected", *AUTOFT_ROWS) and not m.startswith("autoft_")]
    for m in baselines:
        d_ood = 100 * (mean(sel["ood"]) - mean(rows[m]["ood"]))
        d_id = 100 * (mean(sel["id"]) - mean(rows[m]["id"]))
        console.print(f"selected − {m}: OOD mean {d_ood:+.1f}, ID test {d_id:+.1f} points")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--asha", choices=["on", "off", "both"], default="on")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--trials", type=int, default=None, help="override the demo's number of trials")
    ap.add_argument(
        "--all-methods", action="store_true",
        help="compare every registered fine-tuning method, not only FT/LP/LP-FT",
    )  # fmt: skip
    args = ap.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="autoft-bench-"))
    settings = Settings(data_dir=data_dir)
    console = Console(width=120)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.asha]
    for name in args.configs:
        for asha in modes:
            rows, times, steps = run_config(settings, name, args.seeds, args, asha)
            label = f"config {name!r}, ASHA {'on' if asha else 'off'}, {len(args.seeds)} seeds"
            print_table(console, f"{label}: test accuracy (%), mean ± 95% CI", rows)
            console.print(
                f"wall time per job: {', '.join(f'{t:.0f}s' for t in times)}; "
                f"trial steps per job, as a fraction of trials x inner_steps: "
                f"{', '.join(f'{x:.2f}' for x in steps)} (mean {statistics.mean(steps):.2f})\n"
            )


if __name__ == "__main__":
    main()
