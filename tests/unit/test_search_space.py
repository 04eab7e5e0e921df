"""The search space: fixed values are fixed, names follow the contract, TPE is seeded."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autoft_service.errors import InvalidSpec
from autoft_service.search.searcher import (
    INTERRUPTED_ATTR,
    AutoFTOptunaSearch,
    fail_stale_trials,
    finished_trials,
)
from autoft_service.search.space import define_by_run, full_params, make_sampler
from autoft_service.spec import parse_spec
from tests.conftest import small_spec


def _study(seed: int = 0) -> tuple[optuna.Study, object]:
    spec = parse_spec(small_spec())
    sampler = make_sampler(spec.search.sampler.model_copy(update={"seed": seed}))
    return optuna.create_study(direction="maximize", sampler=sampler), define_by_run(spec.search)


def test_ce_is_fixed_not_suggested() -> None:
    study, space = _study()
    trial = study.ask()
    fixed = space(trial)
    assert fixed == {"loss/ce/weight": 1.0}
    assert "loss/ce/weight" not in trial.params
    assert set(trial.params) == {
        *(f"loss/{t}/weight" for t in ["hinge", "entropy", "dcm", "l1_init", "l2_init", "l1_zero", "l2_zero"]),
        "optim/lr", "optim/weight_decay", "train/seed",
    }  # fmt: skip
    for k, v in trial.params.items():
        if k.startswith("loss/"):
            assert 1e-4 <= v <= 10
    assert 3e-5 <= trial.params["optim/lr"] <= 0.3


def test_fixed_lr_and_seed() -> None:
    spec = parse_spec(
        small_spec(search={"lr": {"base": 1e-3, "relative_range": None}, "seed": 3, "weight_decay": 0.1})
    )
    trial = optuna.create_study().ask()
    fixed = define_by_run(spec.search)(trial)
    assert fixed["optim/lr"] == 1e-3 and fixed["train/seed"] == 3 and fixed["optim/weight_decay"] == 0.1
    assert "optim/lr" not in trial.params
    assert full_params(spec.search, trial.params)["optim/lr"] == 1e-3


def _run(seed: int, n: int = 12) -> list[dict]:
    study, space = _study(seed)
    out = []
    for i in range(n):
        t = study.ask()
        space(t)
        study.tell(t, float(t.params["optim/lr"]) * (i % 3))
        out.append(t.params)
    return out


def test_tpe_is_reproducible_with_a_seed() -> None:
    assert _run(0) == _run(0)
    assert _run(0) != _run(1)


def test_stale_trials_are_failed_and_not_counted() -> None:
    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 1.0)
    pruned = study.ask()
    study.tell(pruned, state=TrialState.PRUNED)
    stale = study.ask()  # left RUNNING by a crashed driver
    assert fail_stale_trials(study) == 1
    frozen = study.get_trials()[stale.number]
    assert frozen.state == TrialState.FAIL and frozen.user_attrs[INTERRUPTED_ATTR] is True
    assert [t.number for t in finished_trials(study)] == [done.number, pruned.number]


def test_searcher_records_early_stopped_trials_as_pruned() -> None:
    spec = parse_spec(small_spec())
    searcher = AutoFTOptunaSearch(
        space=define_by_run(spec.search), metric="ood_val/accuracy", mode="max",
        sampler=make_sampler(spec.search.sampler), full_steps=30,
    )  # fmt: skip
    for tid in ("a", "b", "c"):
        assert searcher.suggest(tid)["loss"]["ce"]["weight"] == 1.0
    searcher.on_trial_complete("a", {"ood_val/accuracy": 0.5, "step": 10, "training_iteration": 1})
    searcher.on_trial_complete("b", {"ood_val/accuracy": 0.7, "step": 30, "training_iteration": 3})
    searcher.on_trial_complete("c", None, error=True)
    states = {t.user_attrs["tune_trial_id"]: t.state for t in searcher._ot_study.get_trials()}
    assert states == {"a": TrialState.PRUNED, "b": TrialState.COMPLETE, "c": TrialState.FAIL}
    assert searcher.optuna_number("b") == 1


def test_searcher_tells_the_driver_each_suggested_trial_and_a_saved_copy_tells_nobody() -> None:
    import pickle

    spec = parse_spec(small_spec())
    told: list[tuple[str, dict]] = []
    searcher = AutoFTOptunaSearch(
        space=define_by_run(spec.search), metric="ood_val/accuracy", mode="max",
        sampler=make_sampler(spec.search.sampler), full_steps=30,
        on_suggest=lambda tid, config: told.append((tid, config)),
    )  # fmt: skip
    config = searcher.suggest("a")
    assert told == [("a", config)]  # the config Tune will hand the trial: its run begins from it
    restored = pickle.loads(pickle.dumps(searcher))  # as Tune saves and restores its experiment state
    assert restored.on_suggest("b", config) is False and told == [("a", config)]


@pytest.mark.parametrize("kind", ["tpe", "random"])
def test_sampler_types(kind: str) -> None:
    spec = parse_spec(small_spec(search={"sampler": {"type": kind, "seed": 5}}))
    sampler = make_sampler(spec.search.sampler)
    assert type(sampler).__name__.lower().startswith(kind)


def test_warm_start_copies_fitting_trials_once() -> None:
    from autoft_service.search.searcher import WARM_START_ATTR, own_completed, warm_start
    from autoft_service.search.space import space_distributions

    spec = parse_spec(small_spec())
    dists = space_distributions(spec.search)
    assert "optim/lr" in dists and "loss/ce/weight" not in dists
    source, space = _study(0)
    for i in range(4):
        t = source.ask()
        space(t)
        source.tell(t, float(i))
    pruned = source.ask()
    space(pruned)
    source.tell(pruned, state=TrialState.PRUNED)
    other = parse_spec(small_spec(search={"loss_terms": ["ce", "hinge"]}))  # a different space: skipped
    t = source.ask()
    define_by_run(other.search)(t)
    source.tell(t, 9.0)

    target = optuna.create_study(direction="maximize")
    assert warm_start(target, source, "job-a", dists) == 4
    assert warm_start(target, source, "job-a", dists) == 0  # idempotent on resume
    assert all(t.user_attrs[WARM_START_ATTR] == "job-a" for t in target.trials)
    assert finished_trials(target) == [] and own_completed(target) == []


def test_methods_are_a_searched_dimension_with_their_own_hyperparameters() -> None:
    from workers.trial_config import PLAIN_ADAMW, TrialConfig

    spec = parse_spec(
        small_spec(search={"methods": ["spd", "layerwise"], "sampler": {"type": "random", "seed": 3}})
    )
    study = optuna.create_study(sampler=make_sampler(spec.search.sampler))
    space = define_by_run(spec.search)
    seen = set()
    for _ in range(30):
        t = study.ask()
        space(t)
        name = t.params["method/name"]
        seen.add(name)
        own = {k for k in t.params if k.startswith("method/") and k != "method/name"}
        if name == "spd":
            assert own == {"method/spd/strength"} and 0.01 <= t.params["method/spd/strength"] <= 10
        elif name == "layerwise":
            assert "method/layerwise/lr_multipliers.group0" in own
            config = TrialConfig.from_flat(full_params(spec.search, t.params))
            assert config.ft_method == "layerwise" and set(config.method_params["lr_multipliers"]) >= {
                "group0"
            }
        else:
            config = TrialConfig.from_flat(full_params(spec.search, t.params))
            assert name == PLAIN_ADAMW and not own and config.ft_method is None and config.method_params == {}
        study.tell(t, 0.0)
    assert seen == {"adamw", "spd", "layerwise"}
    with pytest.raises(InvalidSpec) as e:
        parse_spec(small_spec(search={"methods": ["flyp"]}))
    assert e.value.field == "search.methods.0"


@pytest.mark.parametrize("sampler_type", ["tpe", "random"])
def test_a_continued_study_draws_new_points_instead_of_replaying_its_seed(sampler_type: str) -> None:
    """Resume and extend build the sampler again: with the job's seed alone it would replay trial 0, 1, ..."""
    spec = parse_spec(small_spec(search={"sampler": {"type": sampler_type, "seed": 7}}))
    space = define_by_run(spec.search)
    storage = optuna.storages.InMemoryStorage()

    def run(sampler: optuna.samplers.BaseSampler, n: int) -> list[dict]:
        study = optuna.create_study(
            study_name="job", storage=storage, sampler=sampler, direction="maximize", load_if_exists=True
        )
        out = []
        for _ in range(n):
            t = study.ask()
            space(t)
            study.tell(t, float(t.params["optim/lr"]))
            out.append(dict(t.params))
        return out

    first = run(make_sampler(spec.search.sampler), 4)
    # the failure this guards against (and a fresh job's reproducibility): the same seed replays trial 0
    replay = optuna.create_study(sampler=make_sampler(spec.search.sampler), direction="maximize")
    t = replay.ask()
    space(t)
    assert t.params == first[0]

    more = run(make_sampler(spec.search.sampler, continue_after=4), 4)
    assert all(p not in first for p in more)
    assert len({tuple(sorted(p.items())) for p in first + more}) == 8
