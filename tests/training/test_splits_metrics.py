"""Subject-level splits and metrics: no participant or site in two parts; exact metric values."""

from __future__ import annotations

import numpy as np
import pytest

from bids_mdd.errors import BidsMddError
from bids_mdd.metrics import (
    classification_metrics,
    permutation_p_value,
    permuted_outputs_null,
    regression_metrics,
)
from bids_mdd.models.task import Task
from bids_mdd.training.splits import leave_site_out_folds, make_folds

pytestmark = pytest.mark.unit  # make test-fast


def test_paper_a_folds_are_stratified_80_10_10_and_cover_everyone_once():
    y = np.array([1] * 99 + [0] * 75)  # paper A's cohort
    participants = np.array([f"p{i}" for i in range(174)])
    folds = make_folds(y, participants, "classification", n_folds=10, val_fraction=0.1, seed=3)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(174))
    for fold in folds:
        assert len(fold.test) in (17, 18)
        assert 15 <= len(fold.val) <= 20
        assert abs(y[fold.test].mean() - 99 / 174) < 0.06
        assert abs(y[fold.val].mean() - 99 / 174) < 0.1
    again = make_folds(y, participants, "classification", n_folds=10, val_fraction=0.1, seed=3)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))


def test_sessions_of_a_participant_and_sites_stay_together():
    participants = np.repeat([f"p{i}" for i in range(30)], 2)  # two sessions each
    y = np.repeat(np.arange(30) % 2, 2)
    for fold in make_folds(y, participants, "classification", 5, n_repeats=2, seed=0):
        parts = [set(participants[i]) for i in (fold.train, fold.val, fold.test)]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    sites = np.repeat([f"site{i}" for i in range(6)], 10)
    folds = make_folds(y, sites, "classification", 3, seed=0)
    for fold in folds:
        test_sites = set(sites[fold.test])
        assert not test_sites & (set(sites[fold.train]) | set(sites[fold.val]))
        assert not set(sites[fold.train]) & set(sites[fold.val])
    with pytest.raises(BidsMddError, match="only 6 independent groups .* for 10 folds"):
        make_folds(y, sites, "classification", 10)


def test_regression_folds_are_stratified_on_target_quantiles():
    y = np.linspace(-3, 3, 100)
    folds = make_folds(y, np.arange(100).astype(str), "regression", 10, n_repeats=5, seed=1)
    assert len(folds) == 50
    spreads = [np.ptp(y[f.test]) for f in folds]
    assert min(spreads) > 4  # every test part spans the range


def test_classification_metrics_exact():
    truth = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    prob = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1, 0.4, 0.7])
    m = classification_metrics(truth, prob)
    assert m["accuracy"] == 6 / 8
    assert m["recall"] == 3 / 4 and m["specificity"] == 3 / 4
    assert m["balanced_accuracy"] == 0.75
    assert m["auc"] == pytest.approx(14 / 16)


def test_regression_metrics_and_permutation_p():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    m = regression_metrics(truth, np.array([1.5, 1.5, 3.5, 3.5]))
    assert m["mae"] == 0.5 and m["rmse"] == 0.5
    assert m["pearson_r"] == pytest.approx(0.894427, abs=1e-6)
    assert permutation_p_value(0.9, np.array([0.5, 0.95, 0.9, 0.1])) == 3 / 5
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 200)
    informative = truth * 0.6 + rng.random(200) * 0.5
    blocks = np.arange(200) % 5
    acc = lambda t, s: float(np.mean((s > 0.5) == t))  # noqa: E731
    null = permuted_outputs_null(truth, informative, blocks, 200, 0, acc)
    assert permutation_p_value(acc(truth, informative), null) == pytest.approx(1 / 201)
    noise = rng.random(200)
    null = permuted_outputs_null(truth, noise, blocks, 200, 0, acc)
    assert permutation_p_value(acc(truth, noise), null) > 0.05


def test_small_training_parts_still_get_a_validation_part():
    y = np.array([0, 1] * 6)  # 12 participants, 2 folds: 3 per class in each training part
    folds = make_folds(y, np.arange(12).astype(str), "classification", 2, val_fraction=0.1)
    for fold in folds:
        assert len(fold.val) >= 1 and len(fold.train) + len(fold.val) == 6


def test_leave_site_out_tests_each_site_once_on_a_model_that_never_saw_it():
    rng = np.random.default_rng(0)
    sites = np.repeat(["a", "b", "c", "d"], [10, 14, 8, 12])
    participants = np.array([f"p{i:02d}" for i in range(len(sites))])
    y = rng.integers(0, 2, len(sites))
    folds = leave_site_out_folds(y, sites, participants, Task.CLASSIFICATION,
                                 val_fraction=0.1, seed=0)
    assert len(folds) == 4
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(sites)))
    for fold in folds:
        (test_site,) = set(sites[fold.test])
        assert test_site not in set(sites[fold.train]) | set(sites[fold.val])
        assert len(fold.val) > 0 and not set(fold.val) & set(fold.train)
    with pytest.raises(BidsMddError, match="at least 2 sites"):
        leave_site_out_folds(y, np.full(len(y), "a"), participants, Task.CLASSIFICATION)
