"""The one-standard-error selection rule over finished trials."""

from __future__ import annotations

import math

import pytest

from autoft_service.search.selection import Candidate, binomial_se, select_trial


def test_binomial_se_matches_the_formula() -> None:
    assert binomial_se(0.8, 150) == pytest.approx(math.sqrt(0.8 * 0.2 / 150))
    assert binomial_se(0.8, 0) == 0.0


def test_one_se_prefers_the_closer_trial_among_near_ties() -> None:
    # se(0.80, 100) = 0.04: trial 2 (0.78) is a near-tie and moved far less than the best (trial 1)
    cands = [Candidate(0, 0.70, 0.1), Candidate(1, 0.80, 5.0), Candidate(2, 0.78, 0.5)]
    sel = select_trial(cands, n=100)
    assert (sel.chosen, sel.best) == (2, 1)
    assert sel.near_ties == [1, 2]
    assert sel.standard_error == pytest.approx(0.04)
    assert "trial 2" in sel.reason


def test_one_se_ignores_close_trials_outside_one_se() -> None:
    cands = [Candidate(0, 0.70, 0.1), Candidate(1, 0.80, 5.0)]
    assert select_trial(cands, n=100).chosen == 1
    # with many more examples the SE shrinks and a 0.02 gap is no longer a tie
    cands = [Candidate(1, 0.80, 5.0), Candidate(2, 0.78, 0.5)]
    assert select_trial(cands, n=100_000).chosen == 1


def test_best_rule_and_non_accuracy_objectives_take_the_raw_best() -> None:
    cands = [Candidate(1, 0.80, 5.0), Candidate(2, 0.79, 0.5)]
    assert select_trial(cands, n=100, rule="best").chosen == 1
    assert select_trial(cands, n=100, proportion=False).chosen == 1
    loss = [Candidate(1, 0.30, 5.0), Candidate(2, 0.31, 0.5)]
    assert select_trial(loss, n=100, maximize=False).chosen == 1


def test_missing_distances_rank_last_and_empty_input_is_an_error() -> None:
    cands = [Candidate(1, 0.80, None), Candidate(2, 0.79, 3.0)]
    assert select_trial(cands, n=100).chosen == 2
    with pytest.raises(ValueError):
        select_trial([], n=100)
