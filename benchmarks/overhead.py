"""Engine overhead: the same N trials through Ray Tune + Optuna + MLflow vs a plain sequential loop.

Both sides run identical trial configs (taken from a seeded TPE study) with identical inner steps and
evaluation cadence, ASHA off, in one process run, side by side. Prints wall times and ratios.

    python -m benchmarks.overhead [--trials 12] [--inner-steps 120]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console
from rich.table import Table

from autoft_service.engine import Engine, ensure_ray
from autoft_service.search.space import full_params
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from benchmarks._common import demo_spec_dict
from workers.accel import Accel
from workers.autoft import RunBudget, run_objective
from workers.prepared import prepared_task
from workers.trial_config import TrialConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--inner-steps", type=int, default=120)
    args = ap.parse_args()
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="autoft-overhead-")), ray_num_cpus=2)
    table = Table(title=f"{args.trials} trials x {args.inner_steps} inner steps, demo task, ASHA off")
    for c in ("runner", "concurrency", "job wall s", "search stage s", "search s / trial", "loop / search"):
        table.add_column(c)

    def spec_for(concurrency: int, tag: str):  # type: ignore[no-untyped-def]
        d = demo_spec_dict()
        d["name"] = f"bench-overhead-{tag}"
        d["budget"].update(trials=args.trials, inner_steps=args.inner_steps, max_concurrent=concurrency,
                           early_stopping={"type": "none"})  # fmt: skip
        d["final"].update(steps=1, baselines=[], register_model=False)
        return parse_spec(d)

    engine = Engine(settings)
    spec1 = spec_for(1, "c1")
    from workers.tasks import resolve_task

    resolve_task(spec1.task.name).create(spec1.task.params, settings.cache_dir).prepare()
    ensure_ray(settings)

    timings = {}
    for conc in (1, 2):
        spec = spec_for(conc, f"c{conc}")
        t0 = time.perf_counter()
        result = engine.run(spec, job_id=f"overhead-c{conc}-{int(time.time())}")
        timings[conc] = (time.perf_counter() - t0, result.durations["search_s"])
    # the same configs the engine ran (concurrency 1 study), replayed in a plain loop
    summary = next(
        s for s in optuna.get_all_study_summaries(settings.optuna_url) if "overhead-c1" in s.study_name
    )
    trials = optuna.load_study(study_name=summary.study_name, storage=settings.optuna_url).trials
    configs = [full_params(spec1.search, t.params) for t in trials]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    prepared = prepared_task(spec1.task.name, spec1.task.params, str(settings.cache_dir))
    for cfg in configs:
        budget = RunBudget(
            args.inner_steps,
            spec1.budget.batch_size,
            ("accuracy", "macro_f1", "worst_group_accuracy"),
            spec1.budget.eval_every,
        )
        run_objective(prepared, TrialConfig.from_flat(cfg), budget, accel=Accel(torch.device("cpu")),
                      final_eval=False)  # fmt: skip
    loop = time.perf_counter() - t0
    n = args.trials
    table.add_row("plain Python loop", "1", f"{loop:.1f}", f"{loop:.1f}", f"{loop / n:.2f}", "1.00")
    for conc, (total, search) in timings.items():
        table.add_row("engine (Ray Tune+Optuna+MLflow)", str(conc), f"{total:.1f}", f"{search:.1f}",
                      f"{search / n:.2f}", f"{loop / search:.2f}")  # fmt: skip
    Console(width=120).print(table)
    print("job wall time adds setup: MLflow parent run, study, a 1-step final stage, plots, model logging")


if __name__ == "__main__":
    main()
