"""The AutoFT engine: one job = prepare the task, search on Ray Tune + Optuna, retrain, compare, record.

The CLI (``autoft run``) and the service's runner both drive :class:`Engine`. Everything the engine needs to
resume after a crash lives in stores that outlive the process: the Optuna study (RDB storage, keyed by the
job id), the MLflow runs (parent run id kept in :class:`JobHandles`) and the task cache. Resuming a job
fails the trials that were left RUNNING, closes their MLflow runs as KILLED, and asks Tune only for the
trials still missing from the budget; completed trials are never rerun.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from typing import Any

import optuna
from ray.tune.stopper import Stopper
from sqlalchemy.engine import make_url

from autoft_service.engine.dispatch import JobWorkers, Pending
from autoft_service.engine.events import JobHandles, JobListener, JobResult
from autoft_service.engine.ray_runtime import ensure_ray
from autoft_service.engine.results import (
    finished_events,
    pareto_front,
    scalar_info,
    select_final_row,
    with_gap,
)
from autoft_service.engine.tracking_callback import SearchCallback
from autoft_service.errors import InvalidSpec, JobCancelled, SearchFailed
from autoft_service.search.searcher import (
    METRICS_ATTR,
    AutoFTOptunaSearch,
    IdValDropConstraint,
    fail_stale_trials,
    finished_trials,
    own_completed,
    warm_start,
)
from autoft_service.search.selection import PROPORTION_METRICS, Candidate, Selection, select_trial
from autoft_service.search.space import define_by_run, full_params, make_sampler, space_distributions
from autoft_service.settings import Settings
from autoft_service.spec import JobSpec
from autoft_service.tracking import (
    Tracker,
    experiment_name,
    parent_run_name,
    registered_model_name,
    results_markdown,
)
from workers.contexts import TrialContext
from workers.methods import (
    FinalContext,
    model_from_state,
    reevaluate,
    reference_ft,
    run_method,
    soup_row,
    start_metrics,
)
from workers.tasks.base import resolve_task
from workers.trial_config import DISTANCE_KEY

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
# Tune's result loggers are off (MLflow is the record); its analysis then warns about missing result files.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _trial_dirname(trial: Any) -> str:
    return f"trial-{trial.trial_id}"


class _CancelStopper(Stopper):
    """Stops the whole search as soon as the listener reports a cancel request."""

    def __init__(self, listener: JobListener) -> None:
        self.listener: JobListener | None = listener

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.listener is not None and self.listener.should_cancel()

    def __getstate__(self) -> dict[str, Any]:
        return {"listener": None}


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's RDB storage. A SQLite file (the default store) is opened in WAL mode with
    ``synchronous=NORMAL``, as the job store is: Optuna commits every sampled parameter, report and
    attribute on its own (about 25 commits per trial), and a commit then costs no fsync (a power loss can
    lose the newest commits, never corrupt the file; PostgreSQL is the production store)."""
    kwargs: dict[str, Any] = {}
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        kwargs["engine_kwargs"] = {"creator": _SqliteConnector(str(parsed.database))}
    return optuna.storages.RDBStorage(url, heartbeat_interval=None, **kwargs)


class _SqliteConnector:
    """Opens the study's SQLite file in WAL mode, ``synchronous=NORMAL`` (picklable: Tune saves the
    searcher, storage included, with its experiment state)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


# The engine ---------------------------------------------------------------------------------------------------
class Engine:
    """Runs AutoFT jobs against the stores named in ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tracker = Tracker(settings.tracking_uri, settings.artifact_location)

    def storage(self) -> optuna.storages.RDBStorage:
        return optuna_storage(self.settings.optuna_url)

    def study(self, spec: JobSpec, study_name: str) -> optuna.Study:
        return optuna.create_study(
            storage=self.storage(),
            study_name=study_name,
            directions=["maximize" if m == "max" else "minimize" for m in spec.objective.modes],
            load_if_exists=True,
        )

    def enqueue(self, spec: JobSpec, handles: JobHandles, job_id: str, params: list[dict[str, Any]]) -> None:
        """Queue exact configs (e.g. a trial to retry) as the study's next trials; count them in the budget
        via ``extra_trials``. Fixed dimensions are dropped: they are not Optuna parameters."""
        fixed = full_params(spec.search, {})
        study = self.study(spec, handles.study_name or f"autoft-{job_id}")
        for p in params:
            study.enqueue_trial({k: v for k, v in p.items() if k not in fixed}, skip_if_exists=False)

    def run(
        self,
        spec: JobSpec,
        *,
        job_id: str,
        listener: JobListener | None = None,
        handles: JobHandles | None = None,
        extra_trials: int = 0,
    ) -> JobResult:
        """Run (or resume) one job to the end; raise ``JobCancelled`` / ``SearchFailed`` / backend errors."""
        listener = listener or JobListener()
        handles = handles or JobHandles()
        s = self.settings
        s.ensure_dirs()
        t0 = time.time()
        durations: dict[str, float] = {}

        listener.stage("prepare", {"task": spec.task.name})
        task = resolve_task(spec.task.name).create(
            spec.task.params, s.cache_dir, data_roots=s.data_root_paths
        )
        task.prepare()
        workers = JobWorkers(s, spec, job_id, revision=task.revision() or job_id)
        workers.warm(self._trial_context(spec, workers.revision).model_copy(update={"score_start": True}))
        durations["prepare_s"] = time.time() - t0

        self.tracker.ensure_store()
        if handles.experiment_id is None:
            handles.experiment_id = self.tracker.experiment(
                experiment_name(spec.name, handles.tenant), f"AutoFT jobs named {spec.name!r}"
            )
        if handles.parent_run_id is None:
            handles.parent_run_id = self.tracker.start_parent(
                handles.experiment_id,
                job_id,
                parent_run_name(spec.name, job_id),
                spec.model_dump(mode="json"),
                tenant=handles.tenant,
            )
        else:
            self.tracker.close_children(handles.parent_run_id, "KILLED")
            self.tracker.client.update_run(handles.parent_run_id, status="RUNNING")
        handles.study_name = handles.study_name or f"autoft-{job_id}"
        listener.handles(handles)
        durations["setup_s"] = time.time() - t0 - durations["prepare_s"]

        try:
            result = self._run_stages(spec, job_id, listener, handles, extra_trials, durations, t0, workers)
        except JobCancelled:
            self.tracker.close_children(handles.parent_run_id, "KILLED")
            self.tracker.end_run(handles.parent_run_id, "KILLED")
            raise
        except BaseException as e:
            self.tracker.close_children(handles.parent_run_id, "KILLED")
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            try:
                self.tracker.set_tags(handles.parent_run_id, {"autoft.error": str(e)[:4000]})
            finally:
                self.tracker.end_run(handles.parent_run_id, status)
            raise
        self.tracker.end_run(handles.parent_run_id, "FINISHED")
        return result

    # Stages ---------------------------------------------------------------------------------------------
    def _run_stages(
        self,
        spec: JobSpec,
        job_id: str,
        listener: JobListener,
        handles: JobHandles,
        extra_trials: int,
        durations: dict[str, float],
        t0: float,
        workers: JobWorkers,
    ) -> JobResult:
        assert handles.parent_run_id and handles.experiment_id and handles.study_name
        t_search = time.time()
        study = self.study(spec, handles.study_name)
        interrupted = fail_stale_trials(study)
        listener.reconcile(finished_events(spec, finished_trials(study)))
        self._warm_start(spec, study)
        constraint = self._constraint(spec, study, listener, workers)
        budget = spec.budget.trials + extra_trials
        remaining = budget - len(finished_trials(study))
        listener.stage(
            "search",
            {"trials_total": budget, "remaining": max(remaining, 0), "interrupted": interrupted},
        )
        if remaining > 0:
            ensure_ray(self.settings)
            scored = self._search(spec, job_id, listener, handles, workers, remaining, constraint,
                                  len(study.trials), score_start="start" not in study.user_attrs)  # fmt: skip
            if scored is not None:  # only sent when the study had no start yet
                study.set_user_attr("start", scored)
        durations["search_s"] = time.time() - t_search
        if listener.should_cancel():
            raise JobCancelled("job cancelled during the search")

        study = self.study(spec, handles.study_name)
        done = finished_trials(study)
        counts = {st.name.lower(): sum(t.state == st for t in done) for st in optuna.trial.TrialState}
        complete = own_completed(study)
        if not complete:
            raise SearchFailed(f"no trial of job {job_id} completed ({counts})")
        pareto = pareto_front(spec, complete)
        if constraint is not None:
            feasible = [t for t in complete if constraint(t)[0] <= 0]
            if not feasible:
                raise SearchFailed(
                    f"no completed trial meets the constraint (id_val within {spec.objective.max_id_val_drop} "
                    f"of the FT reference {constraint.reference:.4f})"
                )
            complete = feasible
        if spec.objective.id_val_objective:
            front = {p["trial"] for p in pareto}
            complete = [t for t in complete if t.number in front] or complete
            self.tracker.log_json(handles.parent_run_id, pareto, "pareto.json")
        t_select = time.time()
        start = self._start(spec, study, handles, workers)
        best, best_value, reeval, selection, runners_up = self._pick_best(
            spec, complete, handles, listener, start, workers
        )
        durations["select_s"] = time.time() - t_select
        self.tracker.log_json(handles.parent_run_id, selection.as_json(), "selection.json")
        best_params = full_params(spec.search, best.params)
        # params are immutable in MLflow and an extended job may find a new best: tags + an artifact
        self.tracker.set_tags(handles.parent_run_id, {f"best/{k}": v for k, v in best_params.items()})
        self.tracker.log_json(
            handles.parent_run_id, {"trial": best.number, "params": best_params}, "best.json"
        )
        self.tracker.log_metrics(handles.parent_run_id, {f"best/{spec.objective.metric}": best_value})

        t1 = time.time()
        listener.stage("final", {"methods": ["autoft", *(b.row for b in spec.final.baselines)],
                                 "lr_grid": spec.final.baseline_lr_grid})
        by_number = {t.number: t for t in complete}
        soup = [full_params(spec.search, by_number[n].params) for n in runners_up]
        outcomes = self._final_stage(
            spec, best_params, listener, soup[: max(0, spec.final.soup_top_k - 1)], workers
        )
        durations["final_s"] = time.time() - t1
        if listener.should_cancel():
            raise JobCancelled("job cancelled during the final stage")

        selected = select_final_row(outcomes, spec.objective.metric, spec.objective.mode)
        rows = [
            with_gap(
                {"method": o["method"], **o["metrics"], **scalar_info(o["info"]),
                 "selected": o["method"] == selected},
                spec,
            )  # fmt: skip
            for o in outcomes
        ]
        t_record = time.time()
        version = self._record(spec, job_id, handles, study, rows, outcomes, workers, selected)
        durations["record_s"] = time.time() - t_record
        durations["total_s"] = time.time() - t0
        return JobResult(
            job_id=job_id,
            objective=spec.objective.metric,
            best_value=float(best_value),
            best_params=best_params,
            best_trial=best.number,
            results=rows,
            trials=counts,
            handles=handles,
            model_version=version,
            durations=durations,
            reevaluation=reeval,
            pareto=pareto,
            selection={**selection.as_json(), "start": start["metrics"], "selected_row": selected},
        )

    def _warm_start(self, spec: JobSpec, study: optuna.Study) -> None:
        if not spec.search.warm_start_from:
            return
        dists = space_distributions(spec.search)
        names = set(optuna.get_all_study_names(self.storage()))
        for i, source_job in enumerate(spec.search.warm_start_from):
            name = f"autoft-{source_job}"
            if name not in names:
                raise InvalidSpec(
                    f"no study for job {source_job!r} to warm-start from", field=f"search.warm_start_from.{i}"
                )
            n = warm_start(
                study, optuna.load_study(study_name=name, storage=self.storage()), source_job, dists
            )
            log.info("warm start: %d trials from job %s", n, source_job)

    def _pick_best(
        self,
        spec: JobSpec,
        complete: list[optuna.trial.FrozenTrial],
        handles: JobHandles,
        listener: JobListener,
        start: dict[str, Any],
        workers: JobWorkers,
    ) -> tuple[optuna.trial.FrozenTrial, float, list[dict[str, Any]], Selection, list[int]]:
        """The trial whose objective is retrained, chosen by ``final.selection`` (see
        :mod:`autoft_service.search.selection`); with ``final.reevaluate.top_k`` the top-k are first rerun
        on extra seeds and scored by their mean over all seeds (the SE then shrinks with the seed count).
        Also return the re-evaluation table, the selection and the next-best trials (for the soup)."""
        sign = 1.0 if spec.objective.mode == "max" else -1.0
        ranked = sorted(complete, key=lambda t: sign * t.values[0], reverse=True)
        guard = spec.final.reevaluate
        top = ranked[: guard.top_k]
        table = self._reevaluate(spec, top, listener, workers) if guard.top_k > 0 else []
        if table:
            self.tracker.log_json(handles.parent_run_id or "", table, "reevaluation.json")
        means = {r["trial"]: r["mean"] for r in table}
        seeds = 1 + (len(guard.seeds) if table else 0)
        pool = [t for t in ranked if t.number in means] if table else ranked
        cands = [
            Candidate(
                t.number,
                float(means.get(t.number, t.values[0])),
                t.user_attrs.get(METRICS_ATTR, {}).get(DISTANCE_KEY),
            )
            for t in pool
        ]
        metric = spec.objective.metric
        selection = select_trial(
            cands,
            n=int(start.get("ood_val_size", 0)) * (seeds if table else 1),
            rule=spec.final.selection,
            maximize=spec.objective.mode == "max",
            proportion=spec.objective.metric_name in PROPORTION_METRICS and metric.startswith("ood_val/"),
        )
        chosen = next(t for t in pool if t.number == selection.chosen)
        order = sorted(cands, key=lambda c: -sign * c.value)
        runners_up = [c.trial for c in order if c.trial != chosen.number]
        return chosen, selection.chosen_value, table, selection, runners_up

    def _reevaluate(
        self,
        spec: JobSpec,
        top: list[optuna.trial.FrozenTrial],
        listener: JobListener,
        workers: JobWorkers,
    ) -> list[dict[str, Any]]:
        """Rerun ``top`` on ``final.reevaluate.seeds``; one row per trial with every score and their mean."""
        guard = spec.final.reevaluate
        listener.stage("reevaluate", {"top_k": guard.top_k, "seeds": guard.seeds})
        ctx = self._trial_context(spec, workers.revision)
        pending = {
            (t.number, seed): workers.submit(
                "reevaluate", reevaluate, ctx, full_params(spec.search, t.params), seed, spec.objective.metric
            )
            for t in top
            for seed in guard.seeds
        }
        values = {k: p.get() for k, p in pending.items()}
        table: list[dict[str, Any]] = []
        for t in top:
            scores = [float(t.values[0]), *(values[(t.number, s)] for s in guard.seeds)]
            table.append({"trial": t.number, "search_value": float(t.values[0]), "scores": scores,
                          "mean": sum(scores) / len(scores)})  # fmt: skip
        return table

    def _start(
        self, spec: JobSpec, study: optuna.Study, handles: JobHandles, workers: JobWorkers
    ) -> dict[str, Any]:
        """The starting model (pretrained backbone + starting head) scored once per job (kept in the study so
        a resumed job reuses it) and logged as ``start/*``: what every trial and the final stage must beat.
        The search's trials send it; a run of its own only when none did."""
        start = study.user_attrs.get("start")
        if start is None:
            start = workers.run("start", start_metrics, self._final_context(spec, workers.revision))
            study.set_user_attr("start", start)
        self.tracker.log_metrics(
            handles.parent_run_id or "", {f"start/{k}": v for k, v in start["metrics"].items()}
        )
        return dict(start)

    def _trial_context(self, spec: JobSpec, revision: str) -> TrialContext:
        task_cls = resolve_task(spec.task.name)
        return TrialContext(
            task_name=spec.task.name,
            task_params=spec.task.params,
            cache_dir=str(self.settings.cache_dir),
            data_roots=tuple(str(r) for r in self.settings.data_root_paths),
            inner_steps=spec.budget.inner_steps,
            eval_every=spec.budget.eval_every,
            batch_size=spec.budget.batch_size,
            metrics=tuple(task_cls.metrics),
            use_gpu=spec.resources.gpus_per_trial > 0,
            cpu_threads=max(1, math.floor(spec.resources.cpus_per_trial)),
            precision=spec.resources.precision,
            ood_val_aggregate=spec.objective.ood_val_aggregate,
            revision=revision,
        )

    def _constraint(
        self, spec: JobSpec, study: optuna.Study, listener: JobListener, workers: JobWorkers
    ) -> IdValDropConstraint | None:
        """The ID-drop constraint, measured against a plain FT run of the same inner budget (run once per
        job; the reference is kept in the study so a resumed job reuses it)."""
        drop = spec.objective.max_id_val_drop
        if drop is None:
            return None
        key = f"id_val/{spec.objective.metric_name}"
        ref = study.user_attrs.get("ft_reference", {}).get(key)
        if ref is None:
            listener.stage("reference", {"method": "ft", "metric": key})
            ref = float(workers.run("reference", reference_ft, self._trial_context(spec, workers.revision),
                                    spec.search.lr.base, spec.final.baseline_weight_decay, key))  # fmt: skip
            study.set_user_attr("ft_reference", {key: ref})
        return IdValDropConstraint(key, ref, drop)

    def _search(
        self,
        spec: JobSpec,
        job_id: str,
        listener: JobListener,
        handles: JobHandles,
        workers: JobWorkers,
        num_samples: int,
        constraint: IdValDropConstraint | None = None,
        trials_so_far: int = 0,
        *,
        score_start: bool = False,
    ) -> dict[str, Any] | None:
        """Run the Tune search; return the starting model's scores when ``score_start`` asked the trials
        for them and one sent them."""
        from ray import tune

        b = spec.budget
        metric, mode = spec.objective.metric, spec.objective.mode
        multi = spec.objective.id_val_objective
        ctx = self._trial_context(spec, workers.revision).model_copy(update={"score_start": score_start})
        searcher = AutoFTOptunaSearch(
            space=define_by_run(spec.search),
            metric=spec.objective.metrics if multi else metric,
            mode=spec.objective.modes if multi else mode,
            sampler=make_sampler(spec.search.sampler, constraint, continue_after=trials_so_far),
            study_name=handles.study_name,
            storage=self.storage(),
            full_steps=b.inner_steps,
            stop_check=listener.cancel_now,
            on_suggest=workers.trial_starter(ctx),
        )
        scheduler = None
        if b.early_stopping.type == "asha":
            scheduler = tune.schedulers.ASHAScheduler(
                time_attr="step",
                max_t=b.inner_steps,
                grace_period=b.early_stopping.grace_steps,
                reduction_factor=b.early_stopping.reduction_factor,
            )
        callback = SearchCallback(
            tracker=self.tracker,
            searcher=searcher,
            listener=listener,
            job_id=job_id,
            experiment_id=handles.experiment_id or "",
            parent_run_id=handles.parent_run_id or "",
            metric=metric,
            full_steps=b.inner_steps,
            search=spec.search,
            grace_s=self.settings.tracking_grace_seconds,
            tenant=handles.tenant,
        )
        trainable = workers.trainable(ctx)
        job_dir = self.settings.jobs_dir / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        attempt = len(list(job_dir.glob("search-*")))
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode=mode,
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=num_samples,
                max_concurrent_trials=b.max_concurrent,
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=f"search-{attempt}",
                storage_path=str(job_dir),
                verbose=0,
                callbacks=[callback, *workers.callbacks()],
                stop=_CancelStopper(listener),
                failure_config=tune.FailureConfig(max_failures=b.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        try:
            tuner.fit()
        finally:
            workers.release_all()
            callback.close()  # a no-op after a normal end (Tune ended the search, flushing the writes)
        if callback.deferred or callback.lost:
            listener.stage("tracking", {"deferred_writes": callback.deferred, "lost": callback.lost})
        return callback.start

    def _final_stage(
        self,
        spec: JobSpec,
        best_params: dict[str, Any],
        listener: JobListener,
        runners_up: list[dict[str, Any]],
        workers: JobWorkers,
    ) -> list[dict[str, Any]]:
        """Retrain the chosen objective (with its WiSE-FT row), the soup's other ingredients (the next-best
        objectives) and every baseline at each LR of ``final.baseline_lr_grid`` in parallel; keep each
        baseline's LR best on ID val; then greedily soup the AutoFT models."""
        ctx = self._final_context(spec, workers.revision)
        autoft = workers.submit("autoft", run_method, "autoft", ctx, best_params, retries=1)
        ingredients = [
            workers.submit(f"autoft_{i + 1}", run_method, f"autoft_{i + 1}", ctx, p, wise_ft=False, retries=1)
            for i, p in enumerate(runners_up)
        ]
        grid = [spec.search.lr.base * g for g in spec.final.baseline_lr_grid]
        baselines: list[tuple[str, list[Pending]]] = []
        for b in spec.final.baselines:
            lrs = [None] if b.name == "lp" and not b.params else grid
            runs = [workers.submit(b.row, run_method, b.row, ctx, name=b.name, params=b.params, lr=lr, retries=1)
                    for lr in lrs]  # fmt: skip
            baselines.append((b.row, runs))
        workers.wait([autoft, *ingredients, *(r for _, runs in baselines for r in runs)], listener)
        first = autoft.get()
        outcomes = [first, *first.pop("extra", [])]
        models = [first, *(p.get() for p in ingredients)]
        id_key = f"id_val/{spec.objective.metric_name}"
        sign = 1.0 if spec.objective.mode == "max" else -1.0
        for _, runs in baselines:
            tried = [p.get() for p in runs]
            pick = max(tried, key=lambda o: sign * o["metrics"].get(id_key, 0.0))
            if len(tried) > 1:
                pick["info"]["lr_grid"] = {
                    str(o["info"].get("optim/lr")): o["metrics"].get(id_key) for o in tried
                }
            outcomes.append(pick)
        if len(models) > 1:
            soup = workers.submit("soup", soup_row, ctx, models)
            workers.wait([soup], listener)
            outcomes.insert(len(outcomes) - len(baselines), soup.get())
        return outcomes

    def _final_context(self, spec: JobSpec, revision: str) -> FinalContext:
        tc = self._trial_context(spec, revision)
        return FinalContext(
            task_name=tc.task_name,
            task_params=tc.task_params,
            cache_dir=tc.cache_dir,
            data_roots=tc.data_roots,
            steps=spec.final.steps,
            batch_size=spec.budget.batch_size,
            metrics=tc.metrics,
            base_lr=spec.search.lr.base,
            baseline_weight_decay=spec.final.baseline_weight_decay,
            use_gpu=tc.use_gpu,
            cpu_threads=tc.cpu_threads,
            precision=tc.precision,
            wise_ft_alphas=tuple(spec.final.wise_ft_alphas),
            select_metric=spec.objective.metric,
            ood_val_aggregate=spec.objective.ood_val_aggregate,
            revision=revision,
        )

    def _record(
        self,
        spec: JobSpec,
        job_id: str,
        handles: JobHandles,
        study: optuna.Study,
        rows: list[dict[str, Any]],
        outcomes: list[dict[str, Any]],
        workers: JobWorkers,
        selected: str = "autoft",
    ) -> str | None:
        from autoft_service.plots import results_plot, study_plots

        rid = handles.parent_run_id
        assert rid is not None
        for row in rows:
            self.tracker.log_metrics(
                rid, {f"{row['method']}/{k}": v for k, v in row.items() if k != "method"}
            )
        self.tracker.log_results_table(rid, rows)
        self.tracker.log_json(rid, {o["method"]: o["info"] for o in outcomes}, "methods.json")
        for name, html in study_plots(study, spec.objective.metrics).items():
            self.tracker.client.log_text(rid, html, f"plots/{name}.html")
        self.tracker.client.log_text(
            rid, results_plot(rows, spec.objective.metric_name), "plots/results.html"
        )
        self.tracker.set_tags(rid, {"autoft.selected_row": selected})
        chosen = next(o for o in outcomes if o["method"] == selected)
        model, example = model_from_state(self._final_context(spec, workers.revision), chosen["state_dict"])
        registered = registered_model_name(spec.name, handles.tenant) if spec.final.register_model else None
        description = (
            f"AutoFT: the searched fine-tuning objective of job {job_id} ({spec.name!r}), retrained on the "
            f"task {spec.task.name!r} (registered row: {selected!r}, chosen on OOD val); chosen trial params "
            f"in the run's best.json, why in selection.json.\n\n"
            f"Results ({spec.objective.metric_name} on held-out test sets):\n\n{results_markdown(rows)}"
        )
        return self.tracker.log_model(rid, model, example, registered, description)
