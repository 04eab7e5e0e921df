"""Engine overhead: the same N trials through Ray Tune + Optuna + MLflow vs a plain sequential loop.

Both sides run identical trial configs (taken from a seeded TPE study) with identical inner steps and
evaluation cadence, ASHA off, in one run of this script, side by side; the loop runs in a fresh process
of its own (the task loaded before its clock starts), as a user's script would. The jobs' final stage is one retrain of one
step (no baselines, WiSE-FT sweep, soup or re-evaluation), so "job" is the engine's own cost around the
search: MLflow runs, the study, the starting model's scores, the retrain, plots and model logging. Prints
wall times per job stage and the ratios: search-stage speed-up over the loop at concurrency 1 and 2, and
job wall time over loop time.

The engine runs its trials on resident workers, started before the first job as ``autoft serve`` starts
them (``AUTOFT_RESIDENT_WORKERS``); ``--cold`` adds a job at concurrency 2 whose workers start with it (the
pool emptied first), as after a service restart or an idle period. The row "two plain loops" runs the loop's
configs split over two processes at once (each loading the task before its clock starts): what this machine's
two cores give two trainings without any engine, the ceiling of the concurrency-2 speed-up.
``--postgres URL`` (a server, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432``) puts the Optuna study and
the MLflow store in fresh databases there, as in production; default: SQLite files.

    python -m benchmarks.overhead [--trials 12] [--inner-steps 120] [--runs 1] [--cold] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console
from rich.table import Table

from autoft_service.engine import Engine, ensure_ray
from autoft_service.engine.dispatch import resident_pool, start_resident_workers
from autoft_service.search.space import full_params
from autoft_service.settings import Settings
from autoft_service.spec import parse_spec
from benchmarks._common import demo_spec_dict
from workers.accel import Accel
from workers.autoft import RunBudget, run_objective
from workers.prepared import prepared_task
from workers.trial_config import TrialConfig

STAGES = ("prepare_s", "setup_s", "search_s", "select_s", "final_s", "record_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--inner-steps", type=int, default=120)
    ap.add_argument("--runs", type=int, default=1, help="repeat everything; print medians")
    ap.add_argument("--cold", action="store_true", help="also a job whose resident workers start with it")
    ap.add_argument("--postgres", default=None, help="PostgreSQL server URL for the Optuna and MLflow stores")
    args = ap.parse_args()
    pg = args.postgres
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="autoft-overhead-")), ray_num_cpus=2,
        optuna_storage_url=_fresh_database(pg, "optuna") if pg else None,
        mlflow_tracking_uri=_fresh_database(pg, "mlflow") if pg else None,
    )  # fmt: skip

    def spec_for(concurrency: int, tag: str):  # type: ignore[no-untyped-def]
        d = demo_spec_dict()
        d["name"] = f"bench-overhead-{tag}"
        d["budget"].update(trials=args.trials, inner_steps=args.inner_steps, max_concurrent=concurrency,
                           early_stopping={"type": "none"})  # fmt: skip
        d["final"].update(steps=1, baselines=[], register_model=False, wise_ft_alphas=[], soup_top_k=0,
                          reevaluate={"top_k": 0})  # fmt: skip
        return parse_spec(d)

    engine = Engine(settings)
    spec1 = spec_for(1, "c1")
    from workers.tasks import resolve_task

    resolve_task(spec1.task.name).create(spec1.task.params, settings.cache_dir).prepare()
    # the machine's task cache (frozen features, probe head) is filled once, as on any machine that ran a job
    prepared_task(spec1.task.name, spec1.task.params, str(settings.cache_dir))
    ensure_ray(settings)
    start_resident_workers(settings)  # as `autoft serve` does when it starts

    jobs: dict[int | str, list[dict[str, float]]] = {1: [], 2: []}
    loops: list[float] = []
    pairs: list[float] = []

    def job(conc: int, tag: str) -> dict[str, float]:
        t0 = time.perf_counter()
        result = engine.run(spec_for(conc, tag), job_id=f"overhead-{tag}-{int(time.time())}")
        return {**result.durations, "wall_s": time.perf_counter() - t0}

    for run in range(args.runs):
        for conc in (1, 2):
            jobs[conc].append(job(conc, f"c{conc}-r{run}"))
        loops.append(_loops(1, settings, spec1, f"overhead-c1-r{run}-", args.inner_steps))
        pairs.append(_loops(2, settings, spec1, f"overhead-c1-r{run}-", args.inner_steps))
    if args.cold:
        import ray

        ray.kill(resident_pool(settings))  # its workers end with it; the next job starts new ones
        time.sleep(2.0)
        jobs["2, cold"] = [job(2, "cold")]

    n = args.trials
    loop = statistics.median(loops)
    table = Table(title=f"{n} trials x {args.inner_steps} inner steps, demo task, ASHA off, "
                        f"median of {args.runs} run(s)")  # fmt: skip
    for c in ("runner", "conc.", "job wall s", "setup s", "search s", "select s", "final s", "record s",
              "search / trial s", "loop / search", "job / loop"):  # fmt: skip
        table.add_column(c, justify="right")
    pair = statistics.median(pairs)
    table.add_row("plain Python loop, own process", "1", f"{loop:.1f}", "", f"{loop:.1f}", "", "", "", f"{loop / n:.2f}",
                  "1.00", "1.00")  # fmt: skip
    table.add_row("two plain loops, one process each", "2", f"{pair:.1f}", "", f"{pair:.1f}", "", "", "",
                  f"{pair / n:.2f}", f"{loop / pair:.2f}", f"{pair / loop:.2f}")  # fmt: skip
    ratios: dict[int | str, tuple[float, float]] = {}
    for key, runs in jobs.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", *STAGES)}
        ratios[key] = (loop / med["search_s"], med["wall_s"] / loop)
        table.add_row(
            "engine (Ray Tune+Optuna+MLflow)" + (", cold workers" if key == "2, cold" else ""), str(key)[:1],
            f"{med['wall_s']:.1f}",
            f"{med['prepare_s'] + med['setup_s']:.1f}", f"{med['search_s']:.1f}", f"{med['select_s']:.1f}",
            f"{med['final_s']:.1f}", f"{med['record_s']:.1f}", f"{med['search_s'] / n:.2f}",
            f"{ratios[key][0]:.2f}", f"{ratios[key][1]:.2f}",
        )  # fmt: skip
    Console(width=160).print(table)
    print(f"stores: {'PostgreSQL' if args.postgres else 'SQLite'}; search: the study and the Tune run (its "
          "relay actors' start included); select: the starting model's scores and the choice of trial; final: a "
          "1-step retrain; record: results, plots, the model")  # fmt: skip
    print(f"search speed-up over the loop: concurrency 1 {ratios[1][0]:.2f}x (target >= 0.95), "
          f"concurrency 2 {ratios[2][0]:.2f}x (target >= 1.7); "
          f"job wall time / loop at concurrency 2: {ratios[2][1]:.2f} (target <= 0.75); two plain loops in "
          f"parallel: {loop / pair:.2f}x")  # fmt: skip
    if args.runs > 1:
        print("runs: loop " + ", ".join(f"{x:.1f}" for x in loops) + " s; search c1 "
              + ", ".join(f"{r['search_s']:.1f}" for r in jobs[1]) + " s; search c2 "
              + ", ".join(f"{r['search_s']:.1f}" for r in jobs[2]) + " s; job c2 "
              + ", ".join(f"{r['wall_s']:.1f}" for r in jobs[2]) + " s")  # fmt: skip


def _configs(settings: Settings, spec1, study_prefix: str) -> list[dict]:  # type: ignore[no-untyped-def]
    summary = next(
        s for s in optuna.get_all_study_summaries(settings.optuna_url) if study_prefix in s.study_name
    )
    trials = optuna.load_study(study_name=summary.study_name, storage=settings.optuna_url).trials
    return [full_params(spec1.search, t.params) for t in trials]


def _loop_process(args: tuple[str, dict, str, list[dict], int, int, int], ready, go) -> float:  # type: ignore[no-untyped-def]
    """One of :func:`_loops`' processes: load the task, wait for the others, then time its configs."""
    task_name, task_params, cache_dir, configs, inner_steps, batch_size, eval_every = args
    torch.set_num_threads(1)
    prepared = prepared_task(task_name, task_params, cache_dir)
    budget = RunBudget(inner_steps, batch_size, ("accuracy", "macro_f1", "worst_group_accuracy"), eval_every)
    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    for cfg in configs:
        run_objective(prepared, TrialConfig.from_flat(cfg), budget, accel=Accel(torch.device("cpu")),
                      final_eval=False)  # fmt: skip
    return time.perf_counter() - t0


def _loops(k: int, settings: Settings, spec1, study_prefix: str, inner_steps: int) -> float:  # type: ignore[no-untyped-def]
    """The configs the engine ran at concurrency 1, replayed in a plain loop split over ``k`` fresh
    processes that run at once (each loads the task from the machine's cache, as a worker does, before the
    clock starts; one torch thread each, as a trial has): the wall time until all are done. A fresh
    process, not this one: this driver's Ray, Tune and MLflow threads would slow a loop run here."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    configs = _configs(settings, spec1, study_prefix)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as m, ProcessPoolExecutor(k, mp_context=ctx) as pool:
        ready, go = m.Barrier(k + 1), m.Barrier(k + 1)
        common = (spec1.task.name, spec1.task.params, str(settings.cache_dir))
        rest = (inner_steps, spec1.budget.batch_size, spec1.budget.eval_every)
        futures = [pool.submit(_loop_process, (*common, configs[i::k], *rest), ready, go) for i in range(k)]
        ready.wait()
        t0 = time.perf_counter()
        go.wait()
        for f in futures:
            f.result()
        return time.perf_counter() - t0


def _fresh_database(server: str, name: str) -> str:
    """A new, empty database on the PostgreSQL ``server``; return its URL."""
    import uuid

    import psycopg

    db = f"autoft_bench_{name}_{uuid.uuid4().hex[:8]}"
    plain = server.replace("postgresql+psycopg://", "postgresql://").rstrip("/")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    return f"{server.rstrip('/')}/{db}"


if __name__ == "__main__":
    main()
